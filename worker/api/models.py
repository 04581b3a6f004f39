"""The HTTP API's bodies and answers as pydantic models: the same classes validate a
request, shape a response and write the OpenAPI document (openapi.py), so the document
cannot drift from what the server accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from ..cli_args import MAX_URLS, PRIORITY_MAX
from ..scan.target import MAX_INPUT, parse_target

JobStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
UserId = str | int


class _Request(BaseModel):
    # strict: "10" is not a number and 1 is not a string; unknown fields are refused (a
    # typo, or a tenant_id, which only ever comes from the key).
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


def _domain(value: str) -> str:
    parse_target(value)  # the worker's own check: ValueError -> a 422 detail
    return value


def _user(value: UserId | None) -> UserId | None:
    if isinstance(value, str) and not 0 < len(value) <= 255:
        raise ValueError("must be 1 to 255 characters")
    return value


class ScanRequest(_Request):
    """One site to scan. `base_url` is accepted for `domain`, `max_pages` for `max_urls`."""

    domain: str = Field(
        min_length=1,
        max_length=MAX_INPUT,
        validation_alias=AliasChoices("domain", "base_url"),
        description="A host name or URL (`example.com`, `https://example.com/`); alias "
        "`base_url`. Checked exactly as the worker checks it.",
        examples=["example.com"],
    )
    max_urls: int | None = Field(
        default=None,
        ge=1,
        le=MAX_URLS,
        validation_alias=AliasChoices("max_urls", "max_pages"),
        description="Cap on stored page URLs (default 1,000,000); alias `max_pages`.",
    )
    user_id: UserId | None = Field(default=None, description="Kept in the job's payload.")
    priority: int = Field(default=0, ge=-PRIORITY_MAX, le=PRIORITY_MAX, description="Higher first.")
    meta: dict[str, Any] | None = Field(
        default=None, description="Any JSON object, kept with the job and shown with it."
    )

    _check_domain = field_validator("domain")(_domain)
    _check_user = field_validator("user_id")(_user)


class BatchRequest(_Request):
    """Many sites, one child scan each; the limit on `domains` is the server's
    WORKER_API_MAX_BATCH_DOMAINS (default and at most 10,000)."""

    domains: list[str] = Field(
        min_length=1, description="Host names or URLs, each checked as `domain` is."
    )
    max_urls: int | None = Field(
        default=None,
        ge=1,
        le=MAX_URLS,
        validation_alias=AliasChoices("max_urls", "max_pages"),
        description="Cap on stored page URLs per domain; alias `max_pages`.",
    )
    user_id: UserId | None = None
    priority: int = Field(default=0, ge=-PRIORITY_MAX, le=PRIORITY_MAX)
    meta: dict[str, Any] | None = None

    _check_user = field_validator("user_id")(_user)


class ListQuery(BaseModel):
    """GET /api/v3/jobs's query string (lax: query values are text)."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    job_type: str | None = Field(default=None, max_length=200)
    domain: str | None = Field(
        default=None, max_length=MAX_INPUT, description="A scan's domain, as submitted."
    )
    cursor: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="`next_cursor` of the page before."
    )
    limit: int = Field(default=50, ge=1, le=500)


class Submitted(BaseModel):
    job_id: int
    status: JobStatus
    status_url: str


class ScanProgress(BaseModel):
    """What a scan has done so far (also while it runs)."""

    files_listed: int = Field(description="Sitemap files found so far (tried or to try).")
    files_done: int = Field(description="Sitemap files fetched and read.")
    urls_listed: int = Field(description="Page URLs those files listed (a repeat counts twice).")


class BatchChild(BaseModel):
    job_id: int
    domain: Any = Field(description="As given in the batch.")
    status: JobStatus
    progress: float
    error: str | None
    url_count: int | None


class BatchProgress(BaseModel):
    total: int
    ended: int
    children: list[BatchChild]


class JobView(BaseModel):
    """A job as GET /api/v3/sitemap/status/{job_id} and GET /api/v3/jobs/{job_id} show it."""

    job_id: int
    job_type: str
    status: JobStatus
    progress: float
    result: Any = Field(description="The job's result (JSON) once it has one.")
    error: str | None
    attempts: int
    max_attempts: int
    priority: int
    tenant_id: str | None
    user_id: Any
    domain: Any = Field(description="A scan's domain as submitted; null for other jobs.")
    payload: dict[str, Any]
    meta: dict[str, Any] | None
    parent_id: int | None
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    status_url: str
    scan: ScanProgress | None = Field(description="For a sitemap_scan: files and URLs so far.")
    batch: BatchProgress | None = Field(description="For a sitemap_batch: each domain's job.")


class JobSummary(BaseModel):
    job_id: int
    job_type: str
    status: JobStatus
    progress: float
    attempts: int
    max_attempts: int
    priority: int
    tenant_id: str | None
    user_id: str | None
    domain: str | None
    error: str | None
    parent_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_url: str


class JobPage(BaseModel):
    jobs: list[JobSummary]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page; null: last.")
    next: str | None = Field(description="The next page's URL; null on the last page.")


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str | None = None


class ErrorBody(BaseModel):
    error: str
    details: list[ErrorDetail]


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
