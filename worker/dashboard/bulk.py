"""Bulk cancel / retry of everything matching a /jobs filter (not only the page shown):
first a confirmation page with the count, then one statement. The confirmation carries the
newest matching id, and the statement touches nothing newer: a job submitted meanwhile is
not swept up by a confirmation that never counted it."""

from __future__ import annotations

from aiohttp import web

from .. import connections
from ..api.scope import POOL, SETTINGS, scope_of
from ..sql import q
from .filters import BadFilter, JobFilter
from .html import fill, join, tag
from .jobs_list import MAX_JOB_ID
from .layout import can_act, error_page, page

# What each action moves: (from these statuses, verb).
ACTIONS = {
    "cancel": (("pending", "processing"), "cancel"),
    "retry": (("failed", "cancelled"), "retry"),
}


async def bulk_confirm(request: web.Request) -> web.Response:
    scope = scope_of(request)
    action = request.query.get("action", "")
    if action not in ACTIONS:
        return error_page(request, 422, "action: cancel or retry")
    if not can_act(request):
        return error_page(request, 403, "This key is read-only: it cannot change jobs.")
    try:
        chosen = JobFilter.parse(request.query, scope)
    except BadFilter as exc:
        return error_page(request, 422, str(exc))
    statuses, verb = ACTIONS[action]
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        row = await conn.fetchrow(
            q("dash_bulk_preview"), *chosen.args(scope), MAX_JOB_ID, list(statuses)
        )
    n, upto = row["n"], row["upto"]
    back = tag("a", "Back to the list", class_="button secondary", href=f"/jobs?{chosen.query()}")
    if n == 0:
        body = join(
            [
                tag(
                    "p",
                    f"No job matching {chosen.describe()} can be {verb}ed "
                    f"(only {' or '.join(statuses)} ones can).",
                ),
                back,
            ]
        )
        return page(request, f"Nothing to {verb}", body)
    hidden = join(
        tag("input", type="hidden", name=k, value=v)
        for k, v in (
            ("status", chosen.status),
            ("job_type", chosen.job_type),
            ("domain", chosen.domain),
            ("tenant", chosen.tenant),
            ("error", chosen.error),
            ("action", action),
            ("upto", upto),
        )
        if v is not None
    )
    body = fill(
        '<p>This will {verb} <strong id="bulk-count">{n}</strong> job(s) matching {what} '
        "(those {statuses}, up to job #{upto}).</p>"
        '<form method="post" action="/jobs/bulk" class="actions">{hidden}'
        '<button type="submit" class="{cls}" id="bulk-confirm">{label}</button> {back}</form>',
        verb=verb,
        n=f"{n:,}",
        what=chosen.describe(),
        statuses=" or ".join(statuses),
        upto=upto,
        hidden=hidden,
        cls="danger" if action == "cancel" else "",
        label=f"Yes, {verb} {n:,} job(s)",
        back=back,
    )
    return page(request, f"Confirm: {verb} {n:,} job(s)", body)


async def bulk_apply(request: web.Request) -> web.Response:
    scope = scope_of(request)
    form = await request.post()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    action = values.get("action", "")
    upto = values.get("upto", "")
    if action not in ACTIONS or not upto.isdigit() or int(upto) > MAX_JOB_ID:
        return error_page(request, 422, "A bulk action needs its action and its confirmation.")
    try:
        chosen = JobFilter.parse(values, scope)
    except BadFilter as exc:
        return error_page(request, 422, str(exc))
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        if action == "cancel":
            n = await conn.fetchval(q("dash_bulk_cancel"), *chosen.args(scope), int(upto))
        else:
            n = await conn.fetchval(q("dash_bulk_retry"), *chosen.args(scope), int(upto))
    raise web.HTTPSeeOther(location=f"/jobs?{chosen.query(done=action, n=n)}")
