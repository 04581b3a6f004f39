"""The domain endpoints' query strings, body and answers (issue 19): the same classes validate
the requests, shape the answers and write the OpenAPI document, as models.py does for jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .intervals import parse_interval

ScanStatus = Literal["completed", "failed", "cancelled"]
ChangeKind = Literal["added", "removed", "changed"]
TENANT_DOC = (
    "Admin keys only: the tenant whose domain this is (absent: the key's own tenant, for a "
    "plain admin key the domains of jobs without a tenant). A tenant key may only name its own."
)


class DomainUpdate(BaseModel):
    """PUT /api/v3/domains/{domain}: watch a domain (or stop). A domain never scanned is
    created for the caller's tenant, so it can be watched before its first scan."""

    model_config = ConfigDict(extra="forbid")

    rescan_interval: int | str | None = Field(
        description="Seconds (`3600`), ISO 8601 (`PT1H`, `P1D`) or words (`1 day`, `90 "
        "minutes`); at least 1 minute, at most 3650 days; null stops re-scans.",
        examples=["1 day", "PT1H", 3600, None],
    )

    @field_validator("rescan_interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> int | None:
        return parse_interval(value)


class TenantQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = Field(default=None, max_length=200, description=TENANT_DOC)


class DomainQuery(TenantQuery):
    """GET /api/v3/domains/{domain}."""

    scans: int = Field(default=50, ge=1, le=500, description="Scans of the history shown.")


class DomainListQuery(BaseModel):
    """GET /api/v3/domains: by name (then id), keyset pages."""

    model_config = ConfigDict(extra="forbid")

    watched: bool | None = Field(
        default=None, description="true: only domains with a rescan_interval; false: without."
    )
    tenant_id: str | None = Field(
        default=None, max_length=200, description="Admin keys: one tenant's domains only."
    )
    prefix: str | None = Field(
        default=None, max_length=300, description="Only domains whose name starts with this."
    )
    cursor: str | None = Field(
        default=None, max_length=1000, description="`next_cursor` of the page before."
    )
    limit: int = Field(default=50, ge=1, le=500)


class UrlsQuery(BaseModel):
    """A URL listing's query string: keyset pages, or every row as CSV / NDJSON."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["json", "csv", "ndjson"] = Field(
        default="json", description="csv or ndjson stream every row (the page options ignored)."
    )
    cursor: int = Field(
        default=0, ge=0, le=2**63 - 1, description="`next_cursor` of the page before."
    )
    limit: int = Field(default=100, ge=1, le=1000)


class DomainUrlsQuery(UrlsQuery):
    tenant_id: str | None = Field(default=None, max_length=200, description=TENANT_DOC)


class ChangesQuery(TenantQuery):
    """GET /api/v3/domains/{domain}/changes: oldest first from `since`, keyset pages."""

    since: str | None = Field(
        default=None,
        max_length=100,
        description="A job id (changes found by later scans) or an ISO 8601 time (changes "
        "detected after it; UTC if no offset).",
    )
    change: ChangeKind | None = Field(default=None, description="Only this kind of change.")
    cursor: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="`next_cursor` of the page before."
    )
    limit: int = Field(default=100, ge=1, le=1000)


class DomainSummary(BaseModel):
    """A domain as the list shows it."""

    domain: str = Field(description="Normalised: host[:port], no scheme.")
    tenant_id: str | None
    last_job_id: int | None = Field(description="The last scan that ended, however it ended.")
    last_status: ScanStatus | None
    last_scanned_at: datetime | None
    last_completed_job_id: int | None = Field(description="Its URLs are the current set.")
    last_completed_at: datetime | None
    url_count: int = Field(description="As of the last completed scan.")
    sitemap_count: int
    rescan_interval: str | None = Field(description="ISO 8601 (`PT1H`); null: not watched.")
    rescan_interval_seconds: int | None
    next_scan_at: datetime | None
    created_at: datetime
    updated_at: datetime
    url: str = Field(description="This domain's own address in the API.")


class DomainPage(BaseModel):
    domains: list[DomainSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")
    next: str | None = Field(description="The next page's URL; null on the last page.")


class DomainScan(BaseModel):
    """One ended scan, with what changed against the completed scan before it."""

    job_id: int
    status: ScanStatus
    finished_at: datetime
    previous_job_id: int | None = Field(description="The completed scan compared against.")
    url_count: int | None
    sitemap_count: int | None
    added: int | None
    removed: int | None
    changed: int | None = Field(description="URLs whose lastmod moved.")
    complete: bool | None = Field(
        description="Every file was read whole; false: removals of unread files not counted."
    )
    status_url: str


class DomainView(DomainSummary):
    """One domain: its row, and its scans newest first (at most `scans` of them)."""

    scans: list[DomainScan]
    urls_url: str = Field(description="The current set of URLs (the last completed scan's).")
    changes_url: str


class UrlRow(BaseModel):
    loc: str
    lastmod: datetime | None
    lastmod_raw: str | None
    changefreq: str | None
    priority: float | None
    sitemap_file_id: int | None
    images: Any = Field(description="Image extension entries (JSON), null when absent.")
    videos: Any = Field(description="Video extension entries (JSON), null when absent.")
    news: Any = Field(description="News extension (JSON), null when absent.")
    alternates: Any = Field(description="hreflang alternates (JSON), null when absent.")


class UrlPage(BaseModel):
    """A keyset page of URL rows (`format=csv|ndjson` streams every row instead)."""

    job_id: int | None
    count: int
    urls: list[UrlRow]
    next_cursor: int | None
    next: str | None


class DomainUrlPage(UrlPage):
    """The domain's current URLs: its last completed scan's rows (job_id null: none yet)."""

    domain: str
    tenant_id: str | None


class UrlChange(BaseModel):
    id: int = Field(description="Keyset position: pass the last one as `cursor`.")
    job_id: int = Field(description="The scan that saw the change.")
    change: ChangeKind
    loc: str
    lastmod_before: datetime | None
    lastmod_after: datetime | None
    detected_at: datetime


class ChangePage(BaseModel):
    domain: str
    tenant_id: str | None
    count: int
    changes: list[UrlChange]
    next_cursor: int | None
    next: str | None
