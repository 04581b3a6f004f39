"""Plain-text views of jobs for the terminal: the status table and one job's details."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns sized to their content; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and rows
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.0%}" if 0 <= value <= 1 else f"{value:.2f}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def summary(counts: Sequence[asyncpg.Record], recent: Sequence[asyncpg.Record]) -> str:
    by_status = ", ".join(f"{r['status']} {r['n']}" for r in counts) or "no jobs yet"
    rows = [
        (
            r["id"],
            r["job_type"],
            r["status"],
            r["progress"],
            r["attempts"],
            _duration(r["started_at"], r["finished_at"]),
            r["created_at"],
            r["error"] or _short_payload(r["payload"]),
        )
        for r in recent
    ]
    headers = ("id", "type", "status", "progress", "tries", "took", "created", "error / payload")
    return f"jobs: {by_status}\n\n" + (table(headers, rows) if rows else "")


def job_detail(job: asyncpg.Record) -> str:
    lines = [
        f"job {job['id']}  {job['job_type']}  {job['status']}  progress {job['progress']:.0%}",
        f"  payload   {job['payload']}",
        f"  attempts  {job['attempts']}/{job['max_attempts']}   priority {job['priority']}",
        f"  created   {_cell(job['created_at'])}   run_at {_cell(job['run_at'])}",
        f"  started   {_cell(job['started_at'])}   finished {_cell(job['finished_at'])}"
        f"   took {_duration(job['started_at'], job['finished_at'])}",
    ]
    if job["owner"]:
        lines.append(f"  owner     {job['owner']} (lease until {_cell(job['lease_expires_at'])})")
    if job["parent_id"]:
        lines.append(f"  parent    {job['parent_id']}")
    if job["result"]:
        lines.append(f"  result    {_pretty(job['result'])}")
    if job["error"]:
        lines.append(f"  error     {job['error']}")
    return "\n".join(lines)


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _short_payload(payload: str) -> str:
    return payload if payload != "{}" else ""


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), separators=(", ", ": "))
    except ValueError:
        return text


def sitemap_tree(files: Sequence[asyncpg.Record]) -> str:
    """Indexes with their children indented; well-known paths that were not there are only
    counted, since every scan probes them."""
    missing = [f for f in files if f["source"] == "well_known" and f["http_status"] in (404, 410)]
    shown = [f for f in files if f not in missing]
    ids = {f["id"] for f in shown}
    children: dict[int | None, list[asyncpg.Record]] = {}
    for f in shown:
        parent = f["parent_id"] if f["parent_id"] in ids else None
        children.setdefault(parent, []).append(f)
    lines: list[str] = []

    def walk(parent: int | None, indent: str) -> None:
        for f in children.get(parent, []):
            what = f["kind"] or "?"
            count = f"{f['url_count']:,} urls" + (" (truncated)" if f["truncated"] else "")
            error = f"  ERROR {f['error']}" if f["error"] else ""
            lines.append(f"{indent}{f['url']}  [{what}] {count}{error}")
            walk(f["id"], indent + "    ")

    walk(None, "  ")
    if missing:
        lines.append(f"  ({len(missing)} well-known paths not found)")
    return "\n".join(lines) if lines else "  (no sitemap files)"
