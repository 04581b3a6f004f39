"""`/jobs`: every job the caller may see, newest first, filtered and paged by keyset (ids
below the last one shown: never OFFSET, never a count on a page load)."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from .. import connections
from ..api.scope import POOL, SETTINGS, Scope, scope_of
from ..sql import q
from .filters import STATUSES, BadFilter, JobFilter
from .html import Safe, esc, fill, join, tag
from .layout import can_act, number, page, progress_bar, short, status_badge, table, when

PAGE_SIZE = 50
MAX_JOB_ID = 2**63 - 1
ERROR_STATUSES = ("pending", "processing", "failed", "cancelled")  # those that may carry one
BULK_DONE = {"cancel": "cancelled", "retry": "set back to pending"}


async def jobs_page(request: web.Request) -> web.Response:
    scope = scope_of(request)
    wanted = request.query.get("id", "").strip().lstrip("#")
    if wanted.isdigit() and 0 < int(wanted) <= MAX_JOB_ID:
        raise web.HTTPSeeOther(location=f"/jobs/{int(wanted)}")  # "go to job #": its page
    try:
        chosen = JobFilter.parse(request.query, scope)
        before = _before(request.query.get("before", ""))
    except BadFilter as exc:
        return page(
            request,
            "Jobs",
            _filter_form(JobFilter(), scope),
            notice=str(exc),
            error=True,
            status=422,
        )
    rows = await _page(request, chosen, before)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    body = join(
        [
            _filter_form(chosen, scope),
            _bulk_buttons(request, chosen),
            job_table(rows, scope),
            _pager(chosen, before, rows, more),
        ]
    )
    return page(
        request,
        "Jobs",
        body,
        notice=_bulk_notice(request),
        live=' data-live="events" data-swap="jobs-table"',
    )


async def _page(request: web.Request, chosen: JobFilter, before: int | None) -> list[Any]:
    """One page of the filter. Text in the error without a status is looked for status by
    status (a completed job has no error), each walking its status's index newest first,
    and merged: one walk of the whole table for a rare text would read millions of rows."""
    tenant, status, job_type, domain, error = chosen.args(scope_of(request))
    statuses = [status] if status is not None or error is None else list(ERROR_STATUSES)
    rows: list[Any] = []
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        for one in statuses:
            rows += await conn.fetch(
                q("dash_jobs_page"), tenant, one, job_type, domain, error, before, PAGE_SIZE + 1
            )
    return sorted(rows, key=lambda r: r["id"], reverse=True)[: PAGE_SIZE + 1]


def _bulk_notice(request: web.Request) -> str | None:
    """After a bulk action (its redirect says which and how many; no free text)."""
    done, n = request.query.get("done", ""), request.query.get("n", "")
    if done in BULK_DONE and n.isdigit():
        return f"{int(n):,} job(s) {BULK_DONE[done]}."
    return None


def _before(value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) <= MAX_JOB_ID:
        raise BadFilter("before: a job id")
    return int(value)


def _filter_form(chosen: JobFilter, scope: Scope) -> Safe:
    options = join(
        tag("option", label, value=value, selected=value == (chosen.status or ""))
        for value, label in (("", "any"), *((s, s) for s in STATUSES))
    )
    types = join(
        tag("option", label, value=value, selected=value == (chosen.job_type or ""))
        for value, label in (
            ("", "any"),
            ("sitemap_scan", "scan"),
            ("sitemap_batch", "batch"),
            ("noop", "noop"),
        )
    )
    tenant = (
        fill(
            '<label>Tenant<input name="tenant" value="{v}" size="10"></label>',
            v=chosen.tenant or "",
        )
        if scope.tenant_id is None
        else Safe("")
    )
    return fill(
        '<form class="filters" method="get" action="/jobs">'
        '<label>Status<select name="status">{options}</select></label>'
        '<label>Type<select name="job_type">{types}</select></label>'
        '<label>Domain<input name="domain" value="{domain}" size="16" '
        'placeholder="as submitted"></label>{tenant}'
        '<label>Error contains<input name="error" value="{error}" size="16"></label>'
        '<button type="submit">Filter</button> <a class="button secondary" href="/jobs">Clear</a>'
        "</form>"
        '<form class="filters" method="get" action="/jobs"><label>Go to job'
        '<input name="id" inputmode="numeric" size="10" placeholder="#"></label>'
        '<button type="submit" class="secondary">Open</button></form>',
        options=options,
        types=types,
        domain=chosen.domain or "",
        tenant=tenant,
        error=chosen.error or "",
    )


def _bulk_buttons(request: web.Request, chosen: JobFilter) -> Safe:
    if not can_act(request):
        return tag("p", "Read-only: no actions.", class_="note")
    links = [
        tag("a", label, class_="button secondary", href=f"/jobs/bulk?{chosen.query(action=a)}")
        for a, label in (("cancel", "Cancel all matching…"), ("retry", "Retry all matching…"))
    ]
    return fill('<div class="actions">{links}</div>', links=join(links))


def job_table(rows: list[asyncpg.Record], scope: Scope) -> Safe:
    if not rows:
        return Safe('<div id="jobs-table"><p class="note">No jobs match.</p></div>')
    show_tenant = scope.tenant_id is None
    headings: tuple[str, ...] = (
        "Job",
        "Type",
        "Domain",
        "Status",
        "Progress",
        "Attempts",
        "Created",
        "Error",
    )
    if show_tenant:
        headings = (*headings[:3], "Tenant", *headings[3:])
    body = join(_row(r, show_tenant) for r in rows)
    return fill('<div id="jobs-table">{t}</div>', t=table(headings, body))


def _row(r: asyncpg.Record, show_tenant: bool) -> Safe:
    if r["job_type"] == "sitemap_batch":
        what = f"{number(r['domains'])} domains" if r["domains"] is not None else "batch"
        what += f" ({r['children_ended']:,}/{r['children_total']:,} ended)"
    else:
        what = r["domain"] or ""
    cells = [
        fill('<td><a href="/jobs/{id}">#{id}</a></td>', id=r["id"]),
        tag("td", r["job_type"]),
        tag("td", what),
        tag("td", r["tenant_id"] or "–") if show_tenant else Safe(""),
        fill('<td data-status="{s}">{b}</td>', s=r["status"], b=status_badge(r["status"])),
        tag("td", progress_bar(r["progress"], r["status"])),
        tag("td", f"{r['attempts']}/{r['max_attempts']}", class_="num"),
        tag("td", when(r["created_at"])),
        tag("td", short(r["error"], 120), class_="err"),
    ]
    return fill('<tr data-job="{id}">{cells}</tr>', id=r["id"], cells=join(cells))


def _pager(chosen: JobFilter, before: int | None, rows: list[asyncpg.Record], more: bool) -> Safe:
    links = []
    if before is not None:
        links.append(tag("a", "« Newest", href=f"/jobs?{chosen.query()}"))
    if more:
        links.append(tag("a", "Older »", href=f"/jobs?{chosen.query(before=rows[-1]['id'])}"))
    return fill('<nav class="pager">{links}</nav>', links=join(links)) if links else esc("")
