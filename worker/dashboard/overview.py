"""`/`: the queue at a glance. Every figure comes from an index range that stops early (a
capped count), the planner's statistics, or the newest jobs only: the page stays fast on a
table of millions of rows (never a count(*) over the whole table)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from .. import connections
from ..api.scope import POOL, SETTINGS, scope_of
from ..sql import q
from .chart import COLOURS, throughput_svg
from .html import Safe, fill, join, tag
from .layout import number, page, short, status_badge, table, when

COUNT_CAP = 10_000  # a count stops here; above it, the estimate (admin) or "10,000+"
WINDOW = 20_000  # "recent" means among the newest this many jobs
FAILURES = 10
JOBS_PER_WORKER = 10
STATES = ("queued", "scheduled", "processing", "completed", "failed", "cancelled")


async def overview(request: web.Request) -> web.Response:
    scope = scope_of(request)
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        counts = await conn.fetch(q("dash_status_counts"), scope.tenant_id, COUNT_CAP)
        estimates = await conn.fetch(q("dash_status_estimates"))
        activity = await conn.fetch(q("dash_recent_activity"), scope.tenant_id, WINDOW)
        failures = await conn.fetch(q("dash_recent_failures"), scope.tenant_id, FAILURES)
        workers = await conn.fetch(q("dash_workers"), scope.tenant_id, JOBS_PER_WORKER)
        now: datetime = await conn.fetchval(q("dash_now"))
    whole_table = scope.tenant_id is None
    body = join(
        [
            tag("h2", "Jobs by status"),
            _status_cards(counts, {r["status"]: r["n"] for r in estimates} if whole_table else {}),
            tag("h2", "Throughput, last hour"),
            _throughput(activity, now),
            tag("h2", "Workers alive"),
            _workers(workers),
            tag("h2", "Recent failures"),
            _failures(failures),
        ]
    )
    return page(
        request, "Overview", body, live=' data-live="events" data-swap="main" data-debounce="2000"'
    )


def _status_cards(counts: list[asyncpg.Record], estimates: dict[str, int]) -> Safe:
    exact = {r["state"]: r["n"] for r in counts}
    cards = []
    for state in STATES:
        n = exact.get(state, 0)
        if n < COUNT_CAP:
            shown, note = f"{n:,}", ""
        elif state in estimates and estimates[state] >= COUNT_CAP:
            shown, note = f"≈ {estimates[state]:,}", "estimate"
        else:
            shown, note = f"{COUNT_CAP:,}+", "at least"
        label = {"queued": "queued (runnable now)", "scheduled": "scheduled (later)"}.get(
            state, state
        )
        href = f"/jobs?status={'pending' if state in ('queued', 'scheduled') else state}"
        cards.append(
            fill(
                '<a class="card" href="{href}" data-state="{state}">'
                '<span class="n">{shown}</span><span class="label">{label}</span>'
                '<span class="note">{note}</span></a>',
                href=href,
                state=state,
                shown=shown,
                label=label,
                note=note,
            )
        )
    return fill(
        '<div class="cards">{cards}</div><p class="note">Queue depth is queued + processing; '
        "counts stop at {cap}, larger ones are the planner's estimate for the whole table "
        "(≈) or shown as a lower bound.</p>",
        cards=join(cards),
        cap=f"{COUNT_CAP:,}",
    )


def _throughput(activity: list[asyncpg.Record], now: datetime) -> Safe:
    per_minute: dict[datetime, dict[str, int]] = defaultdict(dict)
    recent: dict[str, int] = {}
    for row in activity:
        if row["total"]:
            recent[row["status"]] = row["n"]
        elif row["minute"] is not None:
            per_minute[row["minute"].astimezone(UTC)][row["status"]] = row["n"]
    ended = {s: sum(m.get(s, 0) for m in per_minute.values()) for s, _ in COLOURS}
    legend = join(
        fill(
            '<span class="badge" style="border-color:{c}">{s}: {n}</span>',
            c=colour,
            s=status,
            n=f"{ended[status]:,}",
        )
        for status, colour in COLOURS
    )
    return fill(
        '<div class="chart">{svg}<p>{legend}</p></div>'
        '<p class="note">From the newest {window} jobs: {mix}.</p>',
        svg=throughput_svg(per_minute, now.astimezone(UTC)),
        legend=legend,
        window=f"{WINDOW:,}",
        mix=", ".join(f"{recent[s]:,} {s}" for s in sorted(recent)) or "none yet",
    )


def _workers(rows: list[asyncpg.Record]) -> Safe:
    if not rows:
        return tag("p", "No worker holds a live lease on a job right now.", class_="note")
    body = join(
        fill(
            '<tr><td>{owner}</td><td class="num">{n}</td><td>{jobs}</td><td>{since}</td></tr>',
            owner=r["owner"],
            n=number(r["running"]),
            jobs=join(
                (
                    fill('<a href="/jobs/{id}">#{id}</a> {t}', id=i, t=t)
                    for i, t in zip(r["job_ids"], r["job_types"], strict=True)
                ),
                ", ",
            ),
            since=when(r["since"]),
        )
        for r in rows
    )
    return table(("Worker", "Running", "Jobs", "Oldest started"), body)


def _failures(rows: list[asyncpg.Record]) -> Safe:
    if not rows:
        return tag("p", "No failed jobs.", class_="note")
    body = join(
        fill(
            '<tr><td><a href="/jobs/{id}">#{id}</a></td>'
            "<td>{type}</td><td>{domain}</td>"
            '<td>{status}</td><td class="err">{error}</td>'
            "<td>{at}</td></tr>",
            id=r["id"],
            type=r["job_type"],
            domain=r["domain"] or "",
            status=status_badge("failed"),
            error=short(r["error"]),
            at=when(r["finished_at"]),
        )
        for r in rows
    )
    more = tag("a", "All failed jobs", href="/jobs?status=failed")
    return join([table(("Job", "Type", "Domain", "Status", "Error", "Failed at"), body), more])
