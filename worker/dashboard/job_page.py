"""`/jobs/{job_id}`: one job, kept current by live.js while it runs: status word, progress,
files done / listed, URLs so far, attempts, timings, result, error; a scan's sitemap tree and
first URLs with export links; a batch's domains. Another tenant's job is a 404 page, the
same as a missing one (the tenant is in the query's WHERE clause)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from .. import connections
from ..api.scope import POOL, SETTINGS, scope_of
from ..scan.target import domain_key
from ..sql import q
from . import actions
from .domains_list import domain_href
from .html import Safe, esc, fill, join, tag
from .jobs_list import MAX_JOB_ID
from .layout import (
    TERMINAL,
    can_act,
    error_page,
    number,
    page,
    progress_bar,
    short,
    status_badge,
    table,
    took,
    when,
)
from .tree import sitemap_tree

MAX_FILES = 2_000  # files shown in the tree
FIRST_URLS = 100
MAX_CHILDREN = 1_000
EXPORT_PATH = "/api/v3/sitemap/jobs/{job_id}/urls?format={fmt}"


def job_id_of(request: web.Request) -> int | None:
    raw = request.match_info["job_id"]
    return int(raw) if raw.isdigit() and 0 < int(raw) <= MAX_JOB_ID else None


async def job_page(request: web.Request) -> web.Response:
    scope = scope_of(request)
    job_id = job_id_of(request)
    if job_id is None:
        return error_page(request, 404, "No such job.")
    files: list[asyncpg.Record] = []
    urls: list[asyncpg.Record] = []
    children: list[asyncpg.Record] = []
    totals = None
    async with connections.pooled_transaction(request.app[POOL], request.app[SETTINGS]) as conn:
        job = await conn.fetchrow(q("dash_job"), job_id, scope.tenant_id)
        if job is not None and job["job_type"] == "sitemap_scan":
            totals = await conn.fetchrow(q("dash_job_file_totals"), job_id)
            files = await conn.fetch(q("dash_job_files"), job_id, MAX_FILES)
            urls = await conn.fetch(q("dash_job_urls"), job_id, FIRST_URLS)
        elif job is not None and job["children_total"]:
            children = await conn.fetch(q("dash_batch_children"), job_id, MAX_CHILDREN)
    if job is None:
        return error_page(request, 404, f"Job {job_id} was not found.")
    terminal = job["status"] in TERMINAL
    parts = [_summary(job, totals), _actions(request, job)]
    if job["error"]:
        parts += [tag("h2", "Error"), tag("pre", job["error"], class_="err", id="job-error")]
    if job["job_type"] == "sitemap_scan":
        parts += [
            _exports(job_id),
            tag("h2", "Sitemap files"),
            sitemap_tree(files),
            tag("h2", f"First {FIRST_URLS} URLs"),
            _urls(urls),
        ]
    if children:
        parts += [tag("h2", "Domains"), _children(children, job["children_total"])]
    if job["result"] is not None:
        parts += [
            tag("h2", "Result"),
            tag("pre", json.dumps(_json(job["result"]), indent=2), id="job-result"),
        ]
    what = job["domain"] or (
        f"{job['children_total']:,} domains" if job["children_total"] else job["job_type"]
    )
    live = fill(
        ' data-live="poll" data-job="{id}" data-status="{s}" data-terminal="{t}"',
        id=job_id,
        s=job["status"],
        t="true" if terminal else "false",
    )
    return page(
        request,
        f"Job #{job_id}",
        join(parts),
        heading=f"Job #{job_id} · {job['job_type']} · {what}",
        notice=_action_notice(request),
        live=live,
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _url_count(job: asyncpg.Record, totals: asyncpg.Record | None) -> int | None:
    result = _json(job["result"])
    if isinstance(result, dict) and isinstance(result.get("url_count"), int):
        return int(result["url_count"])
    return None if totals is None else int(totals["urls"])


def _summary(job: asyncpg.Record, totals: asyncpg.Record | None) -> Safe:
    facts: list[tuple[str, object, str]] = [
        ("Status", status_badge(job["status"]), "job-status"),
        ("Progress", progress_bar(job["progress"], job["status"]), "job-progress"),
    ]
    if totals is not None:
        facts.append(
            ("Files done / listed", f"{totals['done']:,} / {totals['listed']:,}", "job-files")
        )
    urls = _url_count(job, totals)
    if urls is not None:
        facts.append(("URLs", number(urls), "url-count"))
    if job["children_total"]:
        facts.append(
            ("Domains ended", f"{job['children_ended']:,} / {job['children_total']:,}", "")
        )
    facts += [
        ("Attempts", f"{job['attempts']} of {job['max_attempts']}", "job-attempts"),
        ("Created", when(job["created_at"]), ""),
        ("Run at", when(job["run_at"]), ""),
        ("Started", when(job["started_at"]), ""),
        ("Finished", when(job["finished_at"]), ""),
        ("Took", took(job["started_at"], job["finished_at"]), ""),
        ("Tenant", job["tenant_id"] or "–", ""),
        *_domain_fact(job),
        ("Priority", job["priority"], ""),
    ]
    if job["owner"] and job["status"] == "processing":
        facts.append(
            ("Worker", f"{job['owner']} (lease to {job['lease_expires_at']:%H:%M:%S})", "")
        )
    if job["parent_id"]:
        facts.append(("Batch", fill('<a href="/jobs/{p}">#{p}</a>', p=job["parent_id"]), ""))
    if job["meta"] is not None:
        facts.append(("Meta", json.dumps(_json(job["meta"])), ""))
    return fill(
        '<dl class="facts">{items}</dl>',
        items=join(
            fill("<dt>{k}</dt><dd{i}>{v}</dd>", k=k, v=v, i=Safe(f' id="{id_}"' if id_ else ""))
            for k, v, id_ in facts
        ),
    )


def _domain_fact(job: asyncpg.Record) -> list[tuple[str, object, str]]:
    """A scan links to its domain's page (every scan of the site, what each changed)."""
    if job["job_type"] != "sitemap_scan":
        return []
    try:
        name = domain_key(job["domain"])
    except ValueError:  # an invalid domain: the job failed at once, there is no history
        return []
    link = fill('<a href="{h}">{n}</a>', h=domain_href(name, job["tenant_id"]), n=name)
    return [("Domain history", link, "domain-link")]


def _actions(request: web.Request, job: asyncpg.Record) -> Safe:
    """Cancel and retry as POST forms; without rights, shown disabled (the server would
    refuse them with 403 anyway)."""
    allowed = can_act(request)
    buttons = []
    if job["status"] in ("pending", "processing"):
        buttons.append(("cancel", "Cancel job", "danger"))
    if job["status"] in ("failed", "cancelled"):
        buttons.append(("retry", "Retry job", ""))
    forms = [
        fill(
            '<form method="post" action="/jobs/{id}/{a}"><button type="submit" id="{a}-button" '
            'class="{cls}"{dis}>{label}</button></form>',
            id=job["id"],
            a=action,
            cls=cls,
            label=label,
            dis=Safe("" if allowed else ' disabled title="read-only key"'),
        )
        for action, label, cls in buttons
    ]
    return fill('<div class="actions">{f}</div>', f=join(forms)) if forms else esc("")


def _action_notice(request: web.Request) -> str | None:
    return {
        "cancel": "Cancelled.",
        "retry": "Set back to pending: it runs again.",
        "cancel-none": "Nothing to cancel: the job had already ended.",
        "retry-none": "Nothing to retry: only a failed or cancelled job can be retried.",
    }.get(request.query.get("done", ""))


def _exports(job_id: int) -> Safe:
    links = [
        tag(
            "a",
            f"Export {fmt.upper()}",
            class_="button secondary",
            id=f"export-{fmt}",
            href=EXPORT_PATH.format(job_id=job_id, fmt=fmt),
        )
        for fmt in ("csv", "ndjson")
    ]
    return fill('<div class="actions">{l}</div>', l=join(links))


def _urls(rows: list[asyncpg.Record]) -> Safe:
    if not rows:
        return tag("p", "No URLs stored yet.", class_="note")
    body = join(
        fill(
            "<tr><td class='file'>{loc}</td><td>{lastmod}</td><td>{freq}</td>"
            "<td class='num'>{prio}</td><td>{badges}</td></tr>",
            loc=r["loc"],
            lastmod=when(r["lastmod"]) if r["lastmod"] else (r["lastmod_raw"] or "–"),
            freq=r["changefreq"] or "",
            prio="" if r["priority"] is None else f"{r['priority']:g}",
            badges=join(
                tag("span", name, class_="badge")
                for name, flag in (
                    ("image", r["has_images"]),
                    ("video", r["has_videos"]),
                    ("news", r["has_news"]),
                    ("hreflang", r["has_alternates"]),
                )
                if flag
            ),
        )
        for r in rows
    )
    return table(
        ("URL", "Last modified", "Change freq.", "Priority", "Extensions"), body, id="urls"
    )


def _children(rows: list[asyncpg.Record], total: int) -> Safe:
    body = join(
        fill(
            '<tr data-job="{id}"><td><a href="/jobs/{id}">#{id}</a></td><td>{domain}</td>'
            '<td data-status="{s}">{badge}</td><td>{bar}</td><td class="num">{urls}</td>'
            '<td class="err">{error}</td></tr>',
            id=r["id"],
            domain=r["domain"] or "",
            s=r["status"],
            badge=status_badge(r["status"]),
            bar=progress_bar(r["progress"], r["status"]),
            urls=number(r["url_count"]),
            error=short(r["error"], 160),
        )
        for r in rows
    )
    more = (
        tag("p", f"The first {len(rows):,} of {total:,}.", class_="note")
        if total > len(rows)
        else esc("")
    )
    return join(
        [table(("Job", "Domain", "Status", "Progress", "URLs", "Error"), body, id="children"), more]
    )


async def job_cancel(request: web.Request) -> web.Response:
    return await _act(request, "cancel")


async def job_retry(request: web.Request) -> web.Response:
    return await _act(request, "retry")


async def _act(request: web.Request, action: str) -> web.Response:
    """Cancel or retry, then back to the job's page (303), which says what happened. A job
    the caller may not see is a 404 page, as on a GET."""
    job_id = job_id_of(request)
    if job_id is None:
        return error_page(request, 404, "No such job.")
    outcome = await (actions.cancel if action == "cancel" else actions.retry)(request, job_id)
    if outcome == "missing":
        return error_page(request, 404, f"Job {job_id} was not found.")
    suffix = "" if outcome == "done" else "-none"
    raise web.HTTPSeeOther(location=f"/jobs/{job_id}?done={action}{suffix}")
