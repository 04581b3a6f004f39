"""What the dashboard's forms change, through the API's own operations
(worker/api/operations.py): a job submitted, cancelled or retried from a page is validated,
given its tenant and refused exactly as over HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from ..api import operations
from ..api.errors import ApiError
from ..api.models import BatchRequest, JobView, ScanRequest
from ..api.scope import POOL, SETTINGS, Scope, scope_of
from ..settings import Settings

Outcome = Literal["done", "ended", "missing"]
Transition = Callable[[asyncpg.Pool, Settings, Scope, int], Awaitable[JobView]]


class Invalid(Exception):
    """The input cannot be submitted: one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems

    @classmethod
    def of(cls, exc: ApiError | ValidationError) -> Invalid:
        if isinstance(exc, ValidationError):
            return cls([f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()])
        details = [f"{_where(d.get('loc', []))}: {d.get('msg', '')}" for d in exc.details]
        return cls(details or [exc.message])


def _where(loc: object) -> str:
    parts = [str(p) for p in loc if p != "body"] if isinstance(loc, list | tuple) else []
    return ".".join(parts) or "input"


async def submit_scan(request: web.Request, domain: str, max_urls: int | None) -> int:
    app = request.app
    try:
        body = ScanRequest.model_validate({"domain": domain, "max_urls": max_urls})
        job, _ = await operations.submit_scan(app[POOL], app[SETTINGS], scope_of(request), body)
    except (ApiError, ValidationError) as exc:
        raise Invalid.of(exc) from None
    return job.job_id


async def submit_batch(request: web.Request, domains: list[str], max_urls: int | None) -> int:
    app = request.app
    try:
        body = BatchRequest.model_validate({"domains": domains, "max_urls": max_urls})
        job, _ = await operations.submit_batch(app[POOL], app[SETTINGS], scope_of(request), body)
    except (ApiError, ValidationError) as exc:
        raise Invalid.of(exc) from None
    return job.job_id


async def cancel(request: web.Request, job_id: int) -> Outcome:
    return await _transition(request, job_id, operations.cancel_job)


async def retry(request: web.Request, job_id: int) -> Outcome:
    return await _transition(request, job_id, operations.retry_job)


async def _transition(request: web.Request, job_id: int, operation: Transition) -> Outcome:
    """done; ended (409: the job is in a state the change does not apply to); missing
    (404: not there, or another tenant's)."""
    app = request.app
    try:
        await operation(app[POOL], app[SETTINGS], scope_of(request), job_id)
    except ApiError as exc:
        if exc.status == 404:
            return "missing"
        if exc.status == 409:
            return "ended"
        raise
    return "done"
