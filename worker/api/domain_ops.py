"""The domain operations the HTTP API and the dashboard share (issue 19): list, read, watch,
changes. Each runs named SQL (sql/queries/api_domains.sql) in one short pooled transaction.

A domain is addressed by its normalised name (worker.scan.target.domain_key: `Example.com`,
`https://example.com/` and `example.com.` are one row) and a tenant: the key's own, or for an
admin key the one it names with `?tenant_id=`. A tenant key naming another tenant, and a
domain that is another tenant's, both answer 404 exactly like a missing domain."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg

from .. import connections
from ..scan.target import domain_key
from ..settings import Settings
from ..sql import q
from .domain_models import (
    ChangePage,
    ChangesQuery,
    DomainListQuery,
    DomainPage,
    DomainScan,
    DomainSummary,
    DomainView,
    UrlChange,
)
from .errors import ApiError, not_found
from .intervals import iso_duration
from .operations import API_PREFIX, status_url
from .scope import Scope

DOMAINS_PATH = f"{API_PREFIX}/domains"
MAX_JOB_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class DomainRef:
    """Which row: a tenant (None: jobs without one) and a normalised name."""

    tenant_id: str | None
    domain: str

    def path(self, tail: str = "", **params: object) -> str:
        """This domain's API address (with the tenant when it has one, so an admin's link
        names the same row)."""
        query = {"tenant_id": self.tenant_id, **params}
        text = urlencode({k: v for k, v in query.items() if v is not None})
        return f"{DOMAINS_PATH}/{quote(self.domain, safe=':[]')}{tail}" + (
            f"?{text}" if text else ""
        )


def query_problem(field: str, message: str, where: str = "query") -> ApiError:
    return ApiError(
        422,
        f"invalid {where}: see details",
        [{"loc": [where, field], "msg": message, "type": "value_error"}],
    )


def resolve(scope: Scope, raw_domain: str, tenant_id: str | None = None) -> DomainRef:
    """The row a request names: 422 for a name that is no domain, 404 for a tenant the key
    may not see (the same answer as a missing domain)."""
    try:
        name = domain_key(raw_domain)
    except ValueError as exc:
        raise ApiError(
            422,
            f"invalid domain: {exc}",
            [{"loc": ["path", "domain"], "msg": str(exc), "type": "value_error"}],
        ) from None
    tenant = tenant_id or scope.submit_tenant
    if not scope.sees(tenant):
        raise not_found("domain")
    return DomainRef(tenant, name)


def summary(row: asyncpg.Record) -> DomainSummary:
    return DomainSummary(**_summary_fields(row))


def _summary_fields(row: asyncpg.Record) -> dict[str, Any]:
    seconds = row["rescan_seconds"]
    return {
        "domain": row["domain"],
        "tenant_id": row["tenant_id"],
        "last_job_id": row["last_job_id"],
        "last_status": row["last_status"],
        "last_scanned_at": row["last_scanned_at"],
        "last_completed_job_id": row["last_completed_job_id"],
        "last_completed_at": row["last_completed_at"],
        "url_count": row["url_count"],
        "sitemap_count": row["sitemap_count"],
        "rescan_interval": None if seconds is None else iso_duration(timedelta(seconds=seconds)),
        "rescan_interval_seconds": seconds,
        "next_scan_at": row["next_scan_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "url": DomainRef(row["tenant_id"], row["domain"]).path(),
    }


def encode_cursor(domain: str, row_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([domain, row_id]).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, int]:
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        value = None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], int)
        or not 0 <= value[1] <= MAX_JOB_ID
    ):
        raise query_problem("cursor", "not a cursor this server gave (use next_cursor as is)")
    return value[0], value[1]


async def list_domains(
    pool: asyncpg.Pool, settings: Settings, scope: Scope, query: DomainListQuery
) -> DomainPage:
    """One keyset page by name; `next_cursor` when there may be more."""
    after = decode_cursor(query.cursor) if query.cursor else None
    async with connections.pooled_transaction(pool, settings, durable=False) as conn:
        rows = await conn.fetch(
            q("api_domain_list"),
            scope.tenant_id,
            query.tenant_id or None,
            query.watched,
            query.prefix.lower() if query.prefix else None,
            after[0] if after else None,
            after[1] if after else None,
            query.limit + 1,
        )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = encode_cursor(rows[-1]["domain"], rows[-1]["id"]) if more and rows else None
    following = None
    if cursor is not None:
        params = query.model_dump(exclude_none=True, exclude={"cursor"})
        following = f"{DOMAINS_PATH}?{urlencode({**params, 'cursor': cursor})}"
    return DomainPage(domains=[summary(r) for r in rows], next_cursor=cursor, next=following)


async def get_domain(
    pool: asyncpg.Pool, settings: Settings, ref: DomainRef, scans: int = 50
) -> DomainView:
    """The domain's row and its last `scans` scans, newest first; 404 when there is none."""
    async with connections.pooled_transaction(pool, settings, durable=False) as conn:
        return await _view(conn, ref, scans)


async def _view(conn: asyncpg.Connection, ref: DomainRef, scans: int) -> DomainView:
    row = await conn.fetchrow(q("api_domain_get"), ref.tenant_id, ref.domain)
    if row is None:
        raise not_found("domain")
    history = await conn.fetch(q("api_domain_scans"), row["id"], scans)
    return DomainView(
        **_summary_fields(row),
        scans=[DomainScan(**dict(s), status_url=status_url(s["job_id"])) for s in history],
        urls_url=ref.path("/urls"),
        changes_url=ref.path("/changes"),
    )


async def domain_row(pool: asyncpg.Pool, settings: Settings, ref: DomainRef) -> asyncpg.Record:
    """The domain's row (404 when there is none)."""
    async with connections.pooled_transaction(pool, settings, durable=False) as conn:
        row = await conn.fetchrow(q("api_domain_get"), ref.tenant_id, ref.domain)
    if row is None:
        raise not_found("domain")
    return row


async def set_interval(
    pool: asyncpg.Pool, settings: Settings, scope: Scope, ref: DomainRef, seconds: int | None
) -> DomainView:
    """Watch every `seconds` (None: stop); creates the row of a domain never scanned."""
    if scope.read_only:
        raise ApiError(403, "this key is read-only")
    async with connections.pooled_transaction(pool, settings) as conn:
        await conn.fetchrow(q("api_domain_set_interval"), ref.tenant_id, ref.domain, seconds)
        return await _view(conn, ref, 50)


def parse_since(text: str | None) -> tuple[int | None, datetime | None]:
    """`since`: a job id, or an ISO 8601 time (UTC when it has no offset)."""
    if text is None or not text.strip():
        return None, None
    text = text.strip()
    if text.isascii() and text.isdigit():
        if not 0 <= int(text) <= MAX_JOB_ID:
            raise query_problem("since", "a job id is at most 2^63 - 1")
        return int(text), None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise query_problem(
            "since", f"{text[:40]!r} is neither a job id nor an ISO 8601 time"
        ) from None
    return None, moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def list_changes(
    pool: asyncpg.Pool, settings: Settings, ref: DomainRef, query: ChangesQuery
) -> ChangePage:
    """One keyset page of the domain's changes, oldest first from `since`."""
    since_job, since_time = parse_since(query.since)
    after = query.cursor or 0
    async with connections.pooled_transaction(pool, settings, durable=False) as conn:
        row = await conn.fetchrow(q("api_domain_get"), ref.tenant_id, ref.domain)
        if row is None:
            raise not_found("domain")
        rows = await conn.fetch(
            q("api_domain_changes"),
            row["id"],
            since_job,
            since_time,
            query.change,
            after,
            query.limit + 1,
        )
    more = len(rows) > query.limit
    changes = [UrlChange(**dict(r)) for r in rows[: query.limit]]
    cursor = changes[-1].id if more and changes else None
    following = None
    if cursor is not None:
        following = ref.path(
            "/changes",
            since=query.since,
            change=query.change,
            cursor=cursor,
            limit=query.limit,
        )
    return ChangePage(
        domain=ref.domain,
        tenant_id=ref.tenant_id,
        count=len(changes),
        changes=changes,
        next_cursor=cursor,
        next=following,
    )
