"""The job operations the HTTP API and the dashboard share: submit a scan or a batch, get,
list, cancel, retry. Each takes (pool, settings, scope, ...), runs named SQL in one short
pooled transaction, and raises ApiError for what the client must hear (404 for a job it may
not see, exactly as for a missing one; 409 for a state that does not allow the change;
422 for input the worker would refuse). The tenant stored on a job is the scope's, never
one from the body."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from pydantic import ValidationError

from .. import connections
from ..jobs.sitemap_batch import BatchPayload
from ..jobs.sitemap_scan import ScanPayload
from ..scan.target import parse_target
from ..settings import Settings
from ..sql import q
from .errors import ApiError, not_found, validation_details
from .models import (
    BatchChild,
    BatchProgress,
    BatchRequest,
    JobPage,
    JobSummary,
    JobView,
    ListQuery,
    ScanProgress,
    ScanRequest,
    Submitted,
)
from .scope import Scope

API_PREFIX = "/api/v3"
MAX_KEY = 255  # Idempotency-Key bytes (the column's CHECK)
MAX_BAD_DOMAINS_SHOWN = 50


def status_url(job_id: int) -> str:
    return f"{API_PREFIX}/sitemap/status/{job_id}"


def _refuse_read_only(scope: Scope) -> None:
    if scope.read_only:
        raise ApiError(403, "this key is read-only")


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY or "\x00" in key:
        raise ApiError(
            422,
            "invalid Idempotency-Key",
            [{"loc": ["header", "Idempotency-Key"], "msg": f"must be 1 to {MAX_KEY} bytes"}],
        )
    return key


def _payload_extra(scope: Scope, max_urls: int | None, user_id: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if max_urls is not None:
        extra["max_urls"] = max_urls
    if scope.submit_tenant is not None:
        extra["tenant_id"] = scope.submit_tenant
    if user_id is not None:
        extra["user_id"] = user_id
    return extra


def _checked(model: type[ScanPayload] | type[BatchPayload], payload: dict[str, Any]) -> str:
    """The payload as the worker will read it: validated by the worker's own model, so a
    job the API accepts is never one the worker fails as invalid."""
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, "invalid job: see details", validation_details(exc)) from None
    return json.dumps(payload)


async def submit_scan(
    pool: asyncpg.Pool,
    settings: Settings,
    scope: Scope,
    request: ScanRequest,
    idempotency_key: str | None = None,
) -> tuple[Submitted, bool]:
    """(the job, True if this call created it; False: an earlier call with the same
    Idempotency-Key did)."""
    _refuse_read_only(scope)
    payload = {"domain": request.domain, **_payload_extra(scope, request.max_urls, request.user_id)}
    text = _checked(ScanPayload, payload)
    return await _insert(
        pool,
        settings,
        scope,
        "sitemap_scan",
        text,
        request.priority,
        request.meta,
        idempotency_key,
    )


async def submit_batch(
    pool: asyncpg.Pool,
    settings: Settings,
    scope: Scope,
    request: BatchRequest,
    idempotency_key: str | None = None,
) -> tuple[Submitted, bool]:
    """A sitemap_batch; every domain is checked first and each bad one is named (422)."""
    _refuse_read_only(scope)
    limit = settings.api_max_batch_domains
    if len(request.domains) > limit:
        raise ApiError(
            422,
            f"too many domains: {len(request.domains)}, at most {limit}",
            [{"loc": ["body", "domains"], "msg": f"at most {limit} domains per batch"}],
        )
    bad = []
    for index, domain in enumerate(request.domains):
        try:
            parse_target(domain)
        except ValueError as exc:
            bad.append({"loc": ["body", "domains", index], "msg": str(exc), "type": "value_error"})
    if bad:
        raise ApiError(
            422, f"{len(bad)} invalid domain(s): see details", bad[:MAX_BAD_DOMAINS_SHOWN]
        )
    payload = {
        "domains": request.domains,
        **_payload_extra(scope, request.max_urls, request.user_id),
    }
    text = _checked(BatchPayload, payload)
    return await _insert(
        pool,
        settings,
        scope,
        "sitemap_batch",
        text,
        request.priority,
        request.meta,
        idempotency_key,
    )


async def _insert(
    pool: asyncpg.Pool,
    settings: Settings,
    scope: Scope,
    job_type: str,
    payload: str,
    priority: int,
    meta: dict[str, Any] | None,
    idempotency_key: str | None,
) -> tuple[Submitted, bool]:
    key = check_idempotency_key(idempotency_key)
    meta_text = None if meta is None else json.dumps(meta)
    async with connections.pooled_transaction(pool, settings) as conn:
        row = await conn.fetchrow(q("api_insert_job"), job_type, payload, priority, meta_text, key)
        created = row is not None
        if row is None:
            # The same key and tenant made a job before (maybe a racing request that
            # committed while this insert waited on the unique index): that one is the
            # answer. A new statement, so a new snapshot that sees it.
            row = await conn.fetchrow(q("api_job_by_idempotency_key"), scope.submit_tenant, key)
    if row is None:  # the first one was deleted between the two statements
        raise ApiError(409, "a job with this Idempotency-Key was just removed; send it again")
    return Submitted(job_id=row["id"], status=row["status"], status_url=status_url(row["id"])), (
        created
    )


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


async def get_job(pool: asyncpg.Pool, settings: Settings, scope: Scope, job_id: int) -> JobView:
    """One job with its progress so far; 404 if missing or not the scope's."""
    async with connections.pooled_transaction(pool, settings, durable=False) as conn:
        row = await conn.fetchrow(q("api_get_job"), job_id, scope.tenant_id)
        if row is None:
            raise not_found()
        children = (
            await conn.fetch(q("api_batch_children"), job_id)
            if row["job_type"] == "sitemap_batch"
            else None
        )
    return job_view(row, children)


def job_view(row: asyncpg.Record, children: list[asyncpg.Record] | None) -> JobView:
    payload = _json(row["payload"])
    payload = payload if isinstance(payload, dict) else {"value": payload}
    scan = None
    if row["job_type"] == "sitemap_scan" and row["files"] is not None:
        scan = ScanProgress(
            files_listed=row["files"], files_done=row["files_done"], urls_listed=row["urls"]
        )
    batch = None
    if children is not None:
        batch = BatchProgress(
            total=row["children_total"],
            ended=row["children_ended"],
            children=[
                BatchChild(
                    job_id=c["id"],
                    domain=c["domain"],
                    status=c["status"],
                    progress=c["progress"],
                    error=c["error"],
                    url_count=_int_or_none(c["url_count"]),
                )
                for c in children
            ],
        )
    return JobView(
        job_id=row["id"],
        job_type=row["job_type"],
        status=row["status"],
        progress=row["progress"],
        result=_json(row["result"]),
        error=row["error"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        tenant_id=row["tenant_id"],
        user_id=payload.get("user_id"),
        domain=payload.get("domain") if row["job_type"] == "sitemap_scan" else None,
        payload=payload,
        meta=_json(row["meta"]),
        parent_id=row["parent_id"],
        run_at=row["run_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        status_url=status_url(row["id"]),
        scan=scan,
        batch=batch,
    )


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


async def list_jobs(
    pool: asyncpg.Pool, settings: Settings, scope: Scope, query: ListQuery
) -> JobPage:
    """One keyset page, newest first; `next_cursor` when there may be more."""
    async with connections.pooled_transaction(pool, settings, durable=False) as conn:
        rows = await conn.fetch(
            q("api_list_jobs"),
            scope.tenant_id,
            query.status,
            query.job_type,
            query.domain,
            query.cursor,
            query.limit + 1,
        )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    jobs = [
        JobSummary(
            job_id=r["id"],
            job_type=r["job_type"],
            status=r["status"],
            progress=r["progress"],
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            priority=r["priority"],
            tenant_id=r["tenant_id"],
            user_id=r["user_id"],
            domain=r["domain"],
            error=r["error"],
            parent_id=r["parent_id"],
            created_at=r["created_at"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            status_url=status_url(r["id"]),
        )
        for r in rows
    ]
    cursor = jobs[-1].job_id if more and jobs else None
    return JobPage(jobs=jobs, next_cursor=cursor, next=_next_url(query, cursor))


def _next_url(query: ListQuery, cursor: int | None) -> str | None:
    if cursor is None:
        return None
    from urllib.parse import urlencode

    params = query.model_dump(exclude_none=True, exclude={"cursor"})
    params["cursor"] = cursor
    return f"{API_PREFIX}/jobs?{urlencode(params)}"


async def cancel_job(pool: asyncpg.Pool, settings: Settings, scope: Scope, job_id: int) -> JobView:
    """pending or processing -> cancelled; 409 for a job that has ended."""
    return await _transition(pool, settings, scope, job_id, "api_cancel_job", "cancel")


async def retry_job(pool: asyncpg.Pool, settings: Settings, scope: Scope, job_id: int) -> JobView:
    """failed or cancelled -> pending, attempts reset; 409 for any other state."""
    return await _transition(pool, settings, scope, job_id, "api_retry_job", "retry")


async def _transition(
    pool: asyncpg.Pool, settings: Settings, scope: Scope, job_id: int, query: str, verb: str
) -> JobView:
    _refuse_read_only(scope)
    async with connections.pooled_transaction(pool, settings) as conn:
        if query == "api_cancel_job":
            done = await conn.fetchval(q("api_cancel_job"), job_id, scope.tenant_id)
        else:
            done = await conn.fetchval(q("api_retry_job"), job_id, scope.tenant_id)
        status = None if done else await conn.fetchval(q("api_job_status"), job_id, scope.tenant_id)
    if not done:
        if status is None:
            raise not_found()
        allowed = "pending or processing" if verb == "cancel" else "failed or cancelled"
        raise ApiError(409, f"cannot {verb} a {status} job: only {allowed} jobs")
    return await get_job(pool, settings, scope, job_id)
