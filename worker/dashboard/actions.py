"""What the dashboard's forms change, through the API's own validation and guarded SQL
(the request models in worker/api/models.py, the queries in sql/queries/api.sql), so a job
submitted, cancelled or retried from a page is checked and scoped exactly as over HTTP."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import connections
from ..api.models import BatchRequest, ScanRequest
from ..api.scope import POOL, SETTINGS, scope_of
from ..sql import q


class Invalid(Exception):
    """The input cannot be submitted: one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _validated(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Invalid(
            [f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()]
        ) from None


async def _insert(request: web.Request, job_type: str, payload: dict[str, Any]) -> int:
    scope = scope_of(request)
    payload = {k: v for k, v in payload.items() if v is not None}
    if scope.submit_tenant is not None:
        payload["tenant_id"] = scope.submit_tenant
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        row = await conn.fetchrow(q("api_insert_job"), job_type, json.dumps(payload), 0, None, None)
    return int(row["id"])


async def submit_scan(request: web.Request, domain: str, max_urls: int | None) -> int:
    body: ScanRequest = _validated(ScanRequest, {"domain": domain, "max_urls": max_urls})
    return await _insert(
        request, "sitemap_scan", {"domain": body.domain, "max_urls": body.max_urls}
    )


async def submit_batch(request: web.Request, domains: list[str], max_urls: int | None) -> int:
    body: BatchRequest = _validated(BatchRequest, {"domains": domains, "max_urls": max_urls})
    return await _insert(
        request, "sitemap_batch", {"domains": body.domains, "max_urls": body.max_urls}
    )


async def cancel(request: web.Request, job_id: int) -> bool:
    """True when the job was cancelled; False when it had ended (or is not the caller's)."""
    scope = scope_of(request)
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        return await conn.fetchval(q("api_cancel_job"), job_id, scope.tenant_id) is not None


async def retry(request: web.Request, job_id: int) -> bool:
    scope = scope_of(request)
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        return await conn.fetchval(q("api_retry_job"), job_id, scope.tenant_id) is not None
