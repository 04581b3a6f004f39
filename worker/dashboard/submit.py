"""`/submit`: one domain (with a URL cap) or a batch (one domain a line). The request goes
through the API's own operations (actions.py), so the dashboard validates, stores the tenant
and refuses exactly as the API does; on success the browser lands on the new job's page."""

from __future__ import annotations

from aiohttp import web

from . import actions
from .html import Safe, fill, join
from .layout import can_act, page


def _forms(request: web.Request, domain: str = "", max_urls: str = "", domains: str = "") -> Safe:
    disabled = Safe("" if can_act(request) else " disabled")
    scan = fill(
        '<form class="stack" method="post" action="/submit/scan" id="scan-form">'
        "<h2>One site</h2>"
        '<label>Domain or URL<input name="domain" id="domain" required value="{domain}" '
        'placeholder="example.com" autocapitalize="off" spellcheck="false"></label>'
        '<label>Max URLs (optional)<input name="max_urls" id="max_urls" inputmode="numeric" '
        'value="{max_urls}" placeholder="1000000"></label>'
        '<button type="submit" id="scan-submit"{d}>Scan</button></form>',
        domain=domain,
        max_urls=max_urls,
        d=disabled,
    )
    batch = fill(
        '<form class="stack" method="post" action="/submit/batch" id="batch-form">'
        "<h2>A batch</h2>"
        '<label>Domains, one a line<textarea name="domains" id="domains" required '
        'autocapitalize="off" spellcheck="false">{domains}</textarea></label>'
        '<label>Max URLs per domain (optional)<input name="max_urls" inputmode="numeric"></label>'
        '<button type="submit" id="batch-submit"{d}>Scan all</button></form>',
        domains=domains,
        d=disabled,
    )
    return join([scan, batch])


async def submit_form(request: web.Request) -> web.Response:
    notice = None if can_act(request) else "Read-only key: you can look, not submit."
    return page(request, "Submit", _forms(request), notice=notice)


def _max_urls(raw: str) -> int | None:
    raw = raw.strip().replace(",", "").replace("_", "")
    if not raw:
        return None
    if not raw.isdigit():
        raise actions.Invalid(["max_urls: a whole number"])
    return int(raw)


async def submit_scan(request: web.Request) -> web.Response:
    form = await request.post()
    domain, max_urls = str(form.get("domain") or ""), str(form.get("max_urls") or "")
    try:
        job_id = await actions.submit_scan(request, domain.strip(), _max_urls(max_urls))
    except actions.Invalid as exc:
        return page(
            request,
            "Submit",
            _forms(request, domain, max_urls),
            notice=str(exc),
            error=True,
            status=422,
        )
    raise web.HTTPSeeOther(location=f"/jobs/{job_id}")


async def submit_batch(request: web.Request) -> web.Response:
    form = await request.post()
    text, max_urls = str(form.get("domains") or ""), str(form.get("max_urls") or "")
    domains = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        job_id = await actions.submit_batch(request, domains, _max_urls(max_urls))
    except actions.Invalid as exc:
        return page(
            request,
            "Submit",
            _forms(request, domains=text),
            notice=str(exc),
            error=True,
            status=422,
        )
    raise web.HTTPSeeOther(location=f"/jobs/{job_id}")
