"""`/domains`: the domains the caller may see, by name, in keyset pages (the API's own list,
worker/api/domain_ops.py): last status, counts, interval and next scan; and a form to watch
a domain before its first scan."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import ValidationError

from ..api import domain_ops
from ..api.domain_models import DomainListQuery, DomainSummary
from ..api.errors import ApiError
from ..api.scope import POOL, SETTINGS, Scope, scope_of
from .html import Safe, esc, fill, join, tag
from .layout import can_act, number, page, status_badge, table, when

PAGE_SIZE = 50
WATCHED = {"": None, "yes": True, "no": False}


def domain_href(domain: str, tenant: str | None) -> str:
    """The dashboard page of one domain (its tenant named, so an admin's link is exact)."""
    query = f"?{urlencode({'tenant': tenant})}" if tenant is not None else ""
    return f"/domains/{quote(domain, safe=':[]')}{query}"


def interval_text(view: DomainSummary) -> str:
    return view.rescan_interval or "not watched"


async def domains_page(request: web.Request) -> web.Response:
    scope = scope_of(request)
    values = request.query
    try:
        query = _query(values, scope)
        listing = await domain_ops.list_domains(
            request.app[POOL], request.app[SETTINGS], scope, query
        )
    except (ApiError, ValidationError) as exc:
        return page(
            request,
            "Domains",
            _filters(values, scope),
            notice=f"Cannot list: {_reason(exc)}",
            error=True,
            status=422,
        )
    body = join(
        [
            _filters(values, scope),
            domain_table(listing.domains, scope),
            _pager(values, listing.next_cursor, bool(values.get("cursor"))),
            tag("h2", "Watch a domain"),
            watch_form(request, "", None, scope, ""),
        ]
    )
    return page(request, "Domains", body, notice=_notice(values))


def _query(values: Mapping[str, str], scope: Scope) -> DomainListQuery:
    watched = values.get("watched", "")
    if watched not in WATCHED:
        raise ApiError(422, "watched: yes, no or empty")
    return DomainListQuery(
        watched=WATCHED[watched],
        tenant_id=(values.get("tenant") or None) if scope.tenant_id is None else None,
        prefix=values.get("prefix", "").strip().lower() or None,
        cursor=values.get("cursor") or None,
        limit=PAGE_SIZE,
    )


def _reason(exc: ApiError | ValidationError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    details = "; ".join(str(d.get("msg", "")) for d in exc.details)
    return details or exc.message


def _notice(values: Mapping[str, str]) -> str | None:
    return {"cleared": "Stopped watching."}.get(values.get("done", ""))


def _filters(values: Mapping[str, str], scope: Scope) -> Safe:
    chosen = values.get("watched", "")
    options = join(
        tag("option", label, value=value, selected=value == chosen)
        for value, label in (("", "any"), ("yes", "watched"), ("no", "not watched"))
    )
    tenant = (
        fill(
            '<label>Tenant<input name="tenant" value="{v}" size="10"></label>',
            v=values.get("tenant", ""),
        )
        if scope.tenant_id is None
        else Safe("")
    )
    return fill(
        '<form class="filters" method="get" action="/domains">'
        '<label>Watched<select name="watched">{options}</select></label>'
        '<label>Name starts with<input name="prefix" value="{prefix}" size="16"></label>{tenant}'
        '<button type="submit">Filter</button> '
        '<a class="button secondary" href="/domains">Clear</a></form>',
        options=options,
        prefix=values.get("prefix", ""),
        tenant=tenant,
    )


def domain_table(rows: list[DomainSummary], scope: Scope) -> Safe:
    if not rows:
        return Safe('<div id="domains-table"><p class="note">No domains match.</p></div>')
    show_tenant = scope.tenant_id is None
    headings: tuple[str, ...] = (
        "Domain",
        "Last scan",
        "Status",
        "URLs",
        "Sitemaps",
        "Interval",
        "Next scan",
    )
    if show_tenant:
        headings = (headings[0], "Tenant", *headings[1:])
    body = join(_row(d, show_tenant) for d in rows)
    return fill('<div id="domains-table">{t}</div>', t=table(headings, body, id="domains"))


def _row(d: DomainSummary, show_tenant: bool) -> Safe:
    last = (
        fill('<a href="/jobs/{j}">#{j}</a> {t}', j=d.last_job_id, t=when(d.last_scanned_at))
        if d.last_job_id is not None
        else esc("never")
    )
    cells = [
        fill('<td><a href="{h}">{d}</a></td>', h=domain_href(d.domain, d.tenant_id), d=d.domain),
        tag("td", d.tenant_id or "–") if show_tenant else Safe(""),
        tag("td", last),
        tag("td", status_badge(d.last_status) if d.last_status else "–"),
        tag("td", number(d.url_count), class_="num"),
        tag("td", number(d.sitemap_count), class_="num"),
        tag("td", interval_text(d)),
        tag("td", when(d.next_scan_at)),
    ]
    return fill('<tr data-domain="{d}">{c}</tr>', d=d.domain, c=join(cells))


def _pager(values: Mapping[str, str], cursor: str | None, paged: bool) -> Safe:
    keep = {k: v for k, v in values.items() if k in ("watched", "prefix", "tenant") and v}
    links = []
    if paged:
        links.append(tag("a", "« First", href=f"/domains?{urlencode(keep)}"))
    if cursor is not None:
        links.append(tag("a", "Next »", href=f"/domains?{urlencode({**keep, 'cursor': cursor})}"))
    return fill('<nav class="pager">{links}</nav>', links=join(links)) if links else esc("")


def watch_form(
    request: web.Request, domain: str, tenant: str | None, scope: Scope, interval: str
) -> Safe:
    """POST /domains/watch: set (or clear) a domain's rescan interval. On a domain's own page
    the domain and its tenant are fixed (hidden); on the list they are typed."""
    disabled = Safe("" if can_act(request) else ' disabled title="read-only key"')
    if domain:
        which = fill(
            '<input type="hidden" name="domain" value="{d}">{t}',
            d=domain,
            t=fill('<input type="hidden" name="tenant" value="{t}">', t=tenant)
            if tenant is not None
            else Safe(""),
        )
    else:
        which = fill(
            '<label>Domain<input name="domain" id="watch-domain" required '
            'placeholder="example.com" autocapitalize="off" spellcheck="false"></label>{t}',
            t=Safe('<label>Tenant<input name="tenant" size="10"></label>')
            if scope.tenant_id is None
            else Safe(""),
        )
    clear = (
        fill(
            '<button type="submit" name="action" value="clear" id="interval-clear" '
            'class="secondary"{dis}>Stop watching</button>',
            dis=disabled,
        )
        if domain
        else Safe("")
    )
    return fill(
        '<form class="filters" method="post" action="/domains/watch" id="watch-form">{which}'
        '<label>Re-scan every<input name="interval" id="interval" value="{v}" size="12" '
        'placeholder="1 day, PT1H, 3600"></label>'
        '<button type="submit" name="action" value="set" id="interval-set"{dis}>Set</button>'
        "{clear}</form>",
        which=which,
        v=interval,
        dis=disabled,
        clear=clear,
    )
