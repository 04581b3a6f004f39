"""`/domains/{domain}`: one domain's history of scans (with what each added, removed and
changed, and links to the jobs), its latest changes, the current URL set's exports, and a
form to set or clear its rescan interval. It reads and writes through the API's own
operations (worker/api/domain_ops.py): same normalising, tenant rules and validation."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from pydantic import ValidationError

from .. import connections
from ..api import domain_ops
from ..api.domain_models import DomainScan, DomainUpdate, DomainView
from ..api.errors import ApiError
from ..api.scope import POOL, SETTINGS, scope_of
from ..sql import q
from .domains_list import domain_href, interval_text, watch_form
from .html import Safe, esc, fill, join, tag
from .layout import can_act, error_page, number, page, status_badge, table, when

HISTORY = 100  # scans shown
RECENT_CHANGES = 50
DONE = {"set": "Rescan interval set.", "cleared": "Stopped watching."}


async def domain_page(request: web.Request) -> web.Response:
    return await _render(request, request.match_info["domain"], request.query.get("tenant"))


async def _render(
    request: web.Request,
    raw_domain: str,
    tenant: str | None,
    *,
    problem: str | None = None,
    typed: str | None = None,
) -> web.Response:
    app, scope = request.app, scope_of(request)
    try:
        ref = domain_ops.resolve(scope, raw_domain, tenant or None)
        view = await domain_ops.get_domain(app[POOL], app[SETTINGS], ref, HISTORY)
    except ApiError as exc:
        if problem is not None:  # a bad interval typed for a domain not known yet
            return error_page(request, 422, problem)
        if exc.status == 404:
            return error_page(request, 404, f"Domain {raw_domain} was not found.")
        return error_page(request, exc.status, _reason(exc))
    async with connections.pooled_transaction(app[POOL], app[SETTINGS], durable=False) as conn:
        changes = await conn.fetch(
            q("dash_domain_recent_changes"), ref.tenant_id, ref.domain, RECENT_CHANGES
        )
    interval = typed if typed is not None else (view.rescan_interval or "")
    parts = [
        _facts(view),
        watch_form(request, view.domain, view.tenant_id, scope, interval),
        _exports(request, view),
        tag("h2", "Scans"),
        _history(view.scans),
        tag("h2", "Recent changes"),
        _changes(changes),
    ]
    notice = problem or DONE.get(request.query.get("done", ""))
    return page(
        request,
        f"Domain {view.domain}",
        join(parts),
        notice=notice,
        error=problem is not None,
        status=422 if problem else 200,
    )


def _reason(exc: ApiError | ValidationError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
    return "; ".join(str(d.get("msg", "")) for d in exc.details) or exc.message


def _facts(view: DomainView) -> Safe:
    def job(job_id: int | None) -> Safe:
        return fill('<a href="/jobs/{j}">#{j}</a>', j=job_id) if job_id else esc("–")

    facts: list[tuple[str, object, str]] = [
        ("Last status", status_badge(view.last_status) if view.last_status else "never scanned",
         "domain-status"),
        ("Last scan", join([job(view.last_job_id), " ", when(view.last_scanned_at)]), ""),
        ("Last completed", join([job(view.last_completed_job_id), " ",
                                 when(view.last_completed_at)]), ""),
        ("URLs", number(view.url_count), "domain-urls"),
        ("Sitemap files", number(view.sitemap_count), ""),
        ("Re-scan every", interval_text(view), "domain-interval"),
        ("Next scan", when(view.next_scan_at), "domain-next"),
        ("Tenant", view.tenant_id or "–", ""),
        ("Known since", when(view.created_at), ""),
    ]  # fmt: skip
    return fill(
        '<dl class="facts">{items}</dl>',
        items=join(
            fill("<dt>{k}</dt><dd{i}>{v}</dd>", k=k, v=v, i=Safe(f' id="{i}"' if i else ""))
            for k, v, i in facts
        ),
    )


def _exports(request: web.Request, view: DomainView) -> Safe:
    """The current URLs' exports, and "Scan now" (the submit form's own route) when a scan
    this key submits would be this domain's: the same tenant."""
    base = view.urls_url + ("&" if "?" in view.urls_url else "?")
    scan = Safe("")
    if scope_of(request).submit_tenant == view.tenant_id:
        scan = fill(
            '<form method="post" action="/submit/scan"><input type="hidden" name="domain" '
            'value="{d}"><button type="submit" id="scan-now"{dis}>Scan now</button></form>',
            d=view.domain,
            dis=Safe("" if can_act(request) else ' disabled title="read-only key"'),
        )
    links: list[Safe] = [
        scan,
        *(
            tag(
                "a",
                f"Current URLs as {fmt.upper()}",
                class_="button secondary",
                id=f"domain-export-{fmt}",
                href=f"{base}format={fmt}",
            )
            for fmt in ("csv", "ndjson")
        ),
    ]
    return fill('<div class="actions">{l}</div>', l=join(links))


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _history(scans: list[DomainScan]) -> Safe:
    if not scans:
        return tag("p", "No scan has ended yet.", class_="note")
    body = join(
        fill(
            '<tr data-job="{j}"><td><a href="/jobs/{j}">#{j}</a></td><td>{badge}</td>'
            "<td>{at}</td><td class='num'>{urls}</td><td class='num'>{files}</td>"
            "<td class='num added'>{a}</td><td class='num removed'>{r}</td>"
            "<td class='num changed'>{c}</td><td>{complete}</td></tr>",
            j=s.job_id,
            badge=status_badge(s.status),
            at=when(s.finished_at),
            urls=_count(s.url_count),
            files=_count(s.sitemap_count),
            a=_count(s.added),
            r=_count(s.removed),
            c=_count(s.changed),
            complete={True: "yes", False: "no: removals not counted", None: "–"}[s.complete],
        )
        for s in scans
    )
    return table(
        ("Job", "Status", "Ended", "URLs", "Sitemaps", "Added", "Removed", "Changed",
         "Read whole"),
        body,
        id="scans",
    )  # fmt: skip


def _changes(rows: list[asyncpg.Record]) -> Safe:
    if not rows:
        return tag("p", "No changes recorded.", class_="note")
    body = join(
        fill(
            "<tr><td>{badge}</td><td class='file'>{loc}</td><td>{before}</td><td>{after}</td>"
            '<td><a href="/jobs/{j}">#{j}</a></td><td>{at}</td></tr>',
            badge=tag("span", r["change"], class_=f"badge change {r['change']}"),
            loc=r["loc"],
            before=when(r["lastmod_before"]),
            after=when(r["lastmod_after"]),
            j=r["job_id"],
            at=when(r["detected_at"]),
        )
        for r in rows
    )
    return table(
        ("Change", "URL", "Lastmod before", "Lastmod after", "Job", "Detected"), body, id="changes"
    )


async def watch(request: web.Request) -> web.Response:
    """POST /domains/watch (domain, tenant, interval, action=set|clear), then back to the
    domain's page (303). Bad input re-shows the page (or the list's error) with the reason."""
    form = await request.post()
    raw = str(form.get("domain") or "").strip()
    tenant = str(form.get("tenant") or "").strip() or None
    typed = str(form.get("interval") or "").strip()
    clear = form.get("action") == "clear"
    app, scope = request.app, scope_of(request)
    try:
        ref = domain_ops.resolve(scope, raw, tenant)
        update = DomainUpdate.model_validate({"rescan_interval": None if clear else typed})
        seconds = update.rescan_interval
        assert seconds is None or isinstance(seconds, int)  # the model's validator made it so
        await domain_ops.set_interval(app[POOL], app[SETTINGS], scope, ref, seconds)
    except (ApiError, ValidationError) as exc:
        if isinstance(exc, ApiError) and exc.status == 404:
            return error_page(request, 404, f"Domain {raw} was not found.")
        if isinstance(exc, ApiError) and exc.status == 403:
            return error_page(request, 403, exc.message)
        reason = _reason(exc)
        if isinstance(exc, ValidationError) and not clear:
            reason = f"Re-scan interval: {reason}"
        if isinstance(exc, ApiError):
            return error_page(request, 422, reason)
        return await _render(request, raw, tenant, problem=reason, typed=typed)
    done = "cleared" if clear else "set"
    href = domain_href(ref.domain, ref.tenant_id)
    raise web.HTTPSeeOther(location=f"{href}{'&' if '?' in href else '?'}done={done}")
