"""The domain endpoints (issue 19): thin handlers over domain_ops, registered and documented
through routes.add_operation like the job endpoints. `{domain}` in a path is any spelling of
the site (`Example.com`, `example.com.`): it is normalised before it is looked up."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel

from . import domain_ops
from .domain_models import (
    ChangePage,
    ChangesQuery,
    DomainListQuery,
    DomainPage,
    DomainQuery,
    DomainUpdate,
    DomainUrlPage,
    DomainUrlsQuery,
    DomainView,
)
from .errors import read_model, validate
from .results import read_url_page, url_page_body
from .results_export import open_export, stream_urls
from .routes import Operation, add_operation
from .scope import POOL, SETTINGS, scope_of

P = domain_ops.DOMAINS_PATH
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9.-]")


def _json(model: BaseModel) -> web.Response:
    return web.Response(text=model.model_dump_json(), content_type="application/json")


def _ref(request: web.Request, tenant_id: str | None) -> domain_ops.DomainRef:
    return domain_ops.resolve(scope_of(request), request.match_info["domain"], tenant_id)


async def list_domains(request: web.Request) -> web.Response:
    query = validate(DomainListQuery, dict(request.query), "query")
    page = await domain_ops.list_domains(
        request.app[POOL], request.app[SETTINGS], scope_of(request), query
    )
    return _json(page)


async def get_domain(request: web.Request) -> web.Response:
    query = validate(DomainQuery, dict(request.query), "query")
    ref = _ref(request, query.tenant_id)
    view = await domain_ops.get_domain(request.app[POOL], request.app[SETTINGS], ref, query.scans)
    return _json(view)


async def put_domain(request: web.Request) -> web.Response:
    query = validate(DomainQuery, dict(request.query), "query")
    ref = _ref(request, query.tenant_id)
    body = await read_model(request, DomainUpdate)
    seconds = body.rescan_interval
    assert seconds is None or isinstance(seconds, int)  # the model's validator made it so
    view = await domain_ops.set_interval(
        request.app[POOL], request.app[SETTINGS], scope_of(request), ref, seconds
    )
    return _json(view)


async def domain_urls(request: web.Request) -> web.StreamResponse:
    """The current set: the URL rows of the domain's last completed scan, paged or exported
    exactly as a job's (results.py, results_export.py). None yet: an empty set."""
    query = validate(DomainUrlsQuery, dict(request.query), "query")
    ref = _ref(request, query.tenant_id)
    row = await domain_ops.domain_row(request.app[POOL], request.app[SETTINGS], ref)
    job_id: int | None = row["last_completed_job_id"]
    tenant = scope_of(request).tenant_id
    if query.format != "json":
        name = f"{_UNSAFE_IN_FILENAME.sub('_', ref.domain)}-urls.{query.format}"
        streamed = None
        if job_id is not None:
            streamed = await stream_urls(
                request, job_id, tenant, query.format, after=query.cursor, filename=name
            )
        if streamed is None:  # no completed scan yet (or it was pruned): no rows
            streamed = await open_export(request, query.format, name)
            await streamed.write_eof()
        return streamed
    rows = None
    if job_id is not None:
        rows = await read_url_page(request, job_id, tenant, query.cursor, query.limit)
    body = url_page_body(rows or [], query.limit, ref.path("/urls"))
    page = DomainUrlPage.model_validate(
        {"job_id": job_id if rows is not None else None, "domain": ref.domain,
         "tenant_id": ref.tenant_id, **body}
    )  # fmt: skip
    return _json(page)


async def domain_changes(request: web.Request) -> web.Response:
    query = validate(ChangesQuery, dict(request.query), "query")
    ref = _ref(request, query.tenant_id)
    page = await domain_ops.list_changes(request.app[POOL], request.app[SETTINGS], ref, query)
    return _json(page)


TABLE = [
    Operation(
        "GET", P, list_domains,
        "List domains by name (keyset pages); watched=true: those re-scanned on their own",
        query=DomainListQuery, response=DomainPage,
    ),
    Operation(
        "GET", f"{P}/{{domain}}", get_domain,
        "One domain: last scan, counts, next scan, interval, its scans newest first",
        query=DomainQuery, response=DomainView,
    ),
    Operation(
        "PUT", f"{P}/{{domain}}", put_domain,
        "Watch a domain every rescan_interval, or stop (null); creates a domain never scanned",
        body=DomainUpdate, query=DomainQuery, response=DomainView,
    ),
    Operation(
        "GET", f"{P}/{{domain}}/urls", domain_urls,
        "The domain's current URLs (its last completed scan's): pages, or format=csv|ndjson",
        query=DomainUrlsQuery, response=DomainUrlPage,
    ),
    Operation(
        "GET", f"{P}/{{domain}}/changes", domain_changes,
        "URLs added, removed or whose lastmod moved, oldest first from `since` (keyset pages)",
        query=ChangesQuery, response=ChangePage,
    ),
]  # fmt: skip


def add_routes(app: web.Application) -> None:
    for op in TABLE:
        add_operation(app, op)
