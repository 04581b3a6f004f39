"""The job endpoints: thin handlers that validate with a model, call one operation and
answer JSON. The table at the bottom registers each route and documents it (openapi.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from .. import connections
from ..sql import q
from . import operations
from .auth import public
from .errors import not_found, read_model, validate
from .models import (
    BatchRequest,
    Health,
    JobPage,
    JobView,
    ListQuery,
    ScanRequest,
    Submitted,
)
from .scope import POOL, SETTINGS, scope_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_JOB_ID = 2**63 - 1


@dataclass(frozen=True)
class Operation:
    """One documented route."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    public: bool = False


OPERATIONS: web.AppKey[list[Operation]] = web.AppKey("sitemap_worker_operations", list)


def job_id_of(request: web.Request) -> int:
    """The path's job id; one that names no possible job answers 404 like a missing one."""
    text = request.match_info["job_id"]
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_JOB_ID:
        raise not_found()
    return int(text)


def _json(model: BaseModel, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        text=model.model_dump_json(),
        status=status,
        content_type="application/json",
        headers=headers or None,
    )


async def submit_scan(request: web.Request) -> web.Response:
    body = await read_model(request, ScanRequest)
    job, created = await operations.submit_scan(
        request.app[POOL],
        request.app[SETTINGS],
        scope_of(request),
        body,
        request.headers.get("Idempotency-Key"),
    )
    return _submitted(job, created)


async def submit_batch(request: web.Request) -> web.Response:
    body = await read_model(request, BatchRequest)
    job, created = await operations.submit_batch(
        request.app[POOL],
        request.app[SETTINGS],
        scope_of(request),
        body,
        request.headers.get("Idempotency-Key"),
    )
    return _submitted(job, created)


def _submitted(job: Submitted, created: bool) -> web.Response:
    headers = {"Location": job.status_url}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _json(job, 202, **headers)


async def job_status(request: web.Request) -> web.Response:
    job = await operations.get_job(
        request.app[POOL], request.app[SETTINGS], scope_of(request), job_id_of(request)
    )
    return _json(job)


async def list_jobs(request: web.Request) -> web.Response:
    query = validate(ListQuery, dict(request.query), "query")
    page = await operations.list_jobs(
        request.app[POOL], request.app[SETTINGS], scope_of(request), query
    )
    return _json(page)


async def cancel_job(request: web.Request) -> web.Response:
    job = await operations.cancel_job(
        request.app[POOL], request.app[SETTINGS], scope_of(request), job_id_of(request)
    )
    return _json(job)


async def retry_job(request: web.Request) -> web.Response:
    job = await operations.retry_job(
        request.app[POOL], request.app[SETTINGS], scope_of(request), job_id_of(request)
    )
    return _json(job)


@public
async def health(request: web.Request) -> web.Response:
    """200 when the server can run a statement on its pool (503 otherwise, from the error
    middleware)."""
    async with connections.pooled_transaction(
        request.app[POOL], request.app[SETTINGS], durable=False
    ) as conn:
        await conn.fetchval(q("api_health"))
    return _json(Health(status="ok", database="ok"))


P = operations.API_PREFIX
TABLE = [
    Operation(
        "POST", f"{P}/sitemap/scan", submit_scan, "Submit a scan of one site",
        body=ScanRequest, response=Submitted, status=202,
    ),
    Operation(
        "POST", f"{P}/sitemap/batch", submit_batch, "Submit a batch: one scan per domain",
        body=BatchRequest, response=Submitted, status=202,
    ),
    Operation(
        "GET", f"{P}/sitemap/status/{{job_id}}", job_status,
        "A job's status, progress, result; for a batch each domain's job", response=JobView,
    ),
    Operation(
        "GET", f"{P}/jobs", list_jobs, "List jobs, newest first (keyset pages)",
        query=ListQuery, response=JobPage,
    ),
    Operation("GET", f"{P}/jobs/{{job_id}}", job_status, "One job", response=JobView),
    Operation(
        "POST", f"{P}/jobs/{{job_id}}/cancel", cancel_job,
        "Cancel a pending or processing job (409 otherwise)", response=JobView,
    ),
    Operation(
        "POST", f"{P}/jobs/{{job_id}}/retry", retry_job,
        "Run a failed or cancelled job again, attempts reset (409 otherwise)", response=JobView,
    ),
    Operation(
        "GET", f"{P}/health", health, "Is the server up and its database reachable",
        response=Health, public=True,
    ),
]  # fmt: skip


def add_operation(app: web.Application, op: Operation) -> None:
    """Register a route and document it; other parts of the server may call this too."""
    app.router.add_route(op.method, op.path, op.handler)
    app[OPERATIONS].append(op)


def add_routes(app: web.Application) -> None:
    for op in TABLE:
        add_operation(app, op)
