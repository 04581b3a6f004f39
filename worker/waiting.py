"""Waiting for jobs to end, with live progress: `enqueue --wait` and `scan`."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import asyncpg

from . import connections
from .settings import Settings
from .sql import q

STATUS_CHANNEL = "sitemap_worker_status"
TERMINAL = frozenset({"completed", "failed", "cancelled"})


async def wait_for_jobs(
    dsn: str, settings: Settings, ids: list[int], *, out: TextIO = sys.stderr, refresh: float = 0.5
) -> list[asyncpg.Record]:
    """Until every job is completed, failed or cancelled. Status changes arrive on the
    status channel; progress is re-read every `refresh` seconds."""
    changed = asyncio.Event()
    conn = await connections.connect(dsn, settings)
    try:
        await conn.add_listener(STATUS_CHANNEL, lambda *_: changed.set())
        last_line = ""
        while True:
            rows = await conn.fetch(q("job_states"), ids)
            line = _progress_line(rows)
            if line != last_line:
                _show(out, line)
                last_line = line
            if (rows and all(r["status"] in TERMINAL for r in rows)) or not rows:
                if out.isatty():
                    out.write("\n")
                return rows
            changed.clear()
            try:
                async with asyncio.timeout(refresh):
                    await changed.wait()
            except TimeoutError:
                pass
    finally:
        await conn.close()


def _progress_line(rows: list[asyncpg.Record]) -> str:
    parts = [_job_part(r) for r in rows[:6]]
    if len(rows) > 6:
        ended = sum(r["status"] in TERMINAL for r in rows)
        parts.append(f"... {ended}/{len(rows)} ended")
    return " | ".join(parts)


def _job_part(row: asyncpg.Record) -> str:
    """`job 12 processing 40% · 4/9 files · 150,000 URLs listed`, once a scan has files: the
    URLs its files listed so far (a URL listed by two files counts twice; the result's
    url_count, printed at the end, counts each once)."""
    part = f"job {row['id']} {row['status']} {row['progress']:.0%}"
    if row["files"]:
        part += f" · {row['files_done']}/{row['files']} files · {row['urls']:,} URLs listed"
    return part


def _show(out: TextIO, line: str) -> None:
    if out.isatty():
        out.write("\r\033[K" + line)
    else:
        out.write(line + "\n")
    out.flush()
