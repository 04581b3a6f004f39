"""What a sitemap_scan reads and writes about its domain, each in a phase of the job.

The worker knows the normalised domain (Target.domain); the database does not. So the scan
links itself to its domain row in its first phase (domain_scan_jobs), and the trigger that
runs in the job's ending transaction (jobs_record_domain_scan, migration 0016) reads that
link to write domain_scans and the domain's last-scan columns, whether the scan completed,
failed or was cancelled. A scan that never started has no link and no history row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ..context import JobContext
from ..sql import q


@dataclass(frozen=True, slots=True)
class DomainLink:
    domain_id: int
    previous_job_id: int | None  # the domain's last completed scan, if it still exists


@dataclass(frozen=True, slots=True)
class PreviousFile:
    """A file of the previous completed scan that a re-scan may carry over."""

    id: int
    url: str
    kind: str
    url_count: int
    stored_urls: int
    etag: str | None
    last_modified: str | None
    content_hash: str
    children: tuple[str, ...]

    @classmethod
    def of(cls, row: asyncpg.Record) -> PreviousFile:
        return cls(
            row["id"],
            row["url"],
            row["kind"],
            row["url_count"],
            row["stored_urls"],
            row["etag"],
            row["last_modified"],
            row["content_hash"],
            tuple(row["children"] or ()),
        )


async def link_scan(ctx: JobContext, domain: str) -> DomainLink:
    """The job's domain row (created on first sight) and its link, in one phase."""

    async def link(conn: asyncpg.Connection) -> asyncpg.Record:
        return await conn.fetchrow(q("link_scan_domain"), ctx.job.id, domain, ctx.job.payload)

    row = await ctx.run_phase(link)
    return DomainLink(row["domain_id"], row["previous_job_id"])


async def previous_files(ctx: JobContext, previous_job_id: int | None) -> dict[str, PreviousFile]:
    """The previous completed scan's carriable files, by URL (empty without one)."""
    if previous_job_id is None:
        return {}
    rows = await ctx.run_phase(lambda conn: conn.fetch(q("previous_files"), previous_job_id))
    return {r["url"]: PreviousFile.of(r) for r in rows}


async def carry_file(ctx: JobContext, columns: tuple[Any, ...], previous: PreviousFile) -> int:
    """The row of an unchanged file, pointing at the URL rows it carries over: its id.
    `columns` are carry_sitemap_file's $2..$12."""
    file_id: int = await ctx.run_phase(
        lambda conn: conn.fetchval(q("carry_sitemap_file"), ctx.job.id, *columns, previous.id)
    )
    return file_id


@dataclass(frozen=True, slots=True)
class Changes:
    added: int | None
    removed: int | None
    changed: int | None
    duplicates: int


async def record_changes(ctx: JobContext, link: DomainLink, *, complete: bool) -> Changes:
    """Compare this scan with the domain's previous completed one; writes url_changes."""

    async def compare(conn: asyncpg.Connection) -> asyncpg.Record:
        return await conn.fetchrow(
            q("scan_changes"), ctx.job.id, link.previous_job_id, link.domain_id, complete
        )

    row = await ctx.run_phase(compare)
    return Changes(row["added"], row["removed"], row["changed"], int(row["duplicates"]))
