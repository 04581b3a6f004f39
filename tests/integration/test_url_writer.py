"""UrlWriter: COPY while the job has no duplicate, ON CONFLICT from the first one on.
Runs on the pooled connections (through PgBouncer in transaction mode too)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.claimed import claimed_context
from tests.support.locks import table_locked, until_a_statement_waits_on_a_lock
from worker.errors import JobLost
from worker.jobs.sitemap.store import UrlWriter, open_file, stored_url_count
from worker.scan.model import SitemapUrl

LONG = "https://a.test/long?" + "q" * 2500  # keyed by md5: over the btree-friendly 2,000 bytes


def pages(*locs: str) -> list[SitemapUrl]:
    return [SitemapUrl(loc, "2026-11-01", priority=0.5) for loc in locs]


async def test_copies_until_a_url_repeats_then_skips_repeats(direct, pool, settings):
    ctx = await claimed_context(direct, pool, settings)
    writer = UrlWriter(ctx, stored_before=0)
    first = await open_file(ctx, "https://a.test/1.xml", None, None, 0, "given")
    second = await open_file(ctx, "https://a.test/2.xml", None, None, 0, "given")

    assert await writer.store(first, pages("https://a.test/p1", "https://a.test/p2", LONG)) == 3
    assert writer.copying
    # p2 and the long URL again, from another file, next to two new ones
    assert (
        await writer.store(
            second, pages("https://a.test/p2", LONG, "https://a.test/p3", "https://a.test/p4")
        )
        == 2
    )
    assert not writer.copying
    assert await writer.store(second, pages("https://a.test/p4", "https://a.test/p5")) == 1

    rows = await direct.fetch(
        "SELECT loc, sitemap_file_id, priority, lastmod_raw, images"
        "  FROM sitemap_urls WHERE job_id = $1",
        ctx.job.id,
    )
    assert {(r["loc"], r["sitemap_file_id"]) for r in rows} == {
        ("https://a.test/p1", first),
        ("https://a.test/p2", first),
        (LONG, first),
        ("https://a.test/p3", second),
        ("https://a.test/p4", second),
        ("https://a.test/p5", second),
    }
    assert {(r["priority"], r["lastmod_raw"], r["images"]) for r in rows} == {
        (0.5, "2026-11-01", None)
    }
    assert await stored_url_count(ctx) == 6


async def test_a_repeat_inside_one_chunk_is_stored_once(direct, pool, settings):
    ctx = await claimed_context(direct, pool, settings)
    writer = UrlWriter(ctx, stored_before=0)
    file_id = await open_file(ctx, "https://a.test/1.xml", None, None, 0, "given")
    assert (
        await writer.store(file_id, pages("https://a.test/p1", LONG, "https://a.test/p1", LONG))
        == 2
    )
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", ctx.job.id)
        == 2
    )


async def test_a_rerun_starts_with_on_conflict_and_adds_only_what_is_missing(
    direct, pool, settings
):
    ctx = await claimed_context(direct, pool, settings)
    file_id = await open_file(ctx, "https://a.test/1.xml", None, None, 0, "given")
    assert await UrlWriter(ctx, stored_before=0).store(file_id, pages("https://a.test/p1")) == 1
    rerun = UrlWriter(ctx, stored_before=1)
    assert not rerun.copying
    assert await rerun.store(file_id, pages("https://a.test/p1", "https://a.test/p2")) == 1


async def test_a_chunk_for_a_job_it_no_longer_owns_writes_nothing(direct, pool, settings):
    ctx = await claimed_context(direct, pool, settings)
    file_id = await open_file(ctx, "https://a.test/1.xml", None, None, 0, "given")
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", ctx.job.id)
    with pytest.raises(JobLost, match="cancelled or lost its lease"):
        await UrlWriter(ctx, stored_before=0).store(file_id, pages("https://a.test/p1"))
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", ctx.job.id)
        == 0
    )


async def test_two_files_writing_the_same_urls_in_opposite_orders_both_finish(
    direct, pool, settings
):
    """Without sorting each chunk (and retrying a deadlock), the two transactions can lock
    the unique index's entries in opposite orders, and PostgreSQL kills one with 40P01.
    Several rounds, since the overlap in time is up to the scheduler."""
    ctx = await claimed_context(direct, pool, settings)
    first = await open_file(ctx, "https://a.test/1.xml", None, None, 0, "given")
    second = await open_file(ctx, "https://a.test/2.xml", None, None, 0, "given")
    for round_ in range(8):
        locs = [f"https://a.test/r{round_}/p{i:05d}" for i in range(3000)]
        one, other = UrlWriter(ctx, stored_before=0), UrlWriter(ctx, stored_before=0)
        news = await asyncio.gather(
            one.store(first, pages(*locs[:2000])),
            other.store(second, pages(*reversed(locs[1000:]))),
        )
        assert sum(news) == 3000
    assert await direct.fetchval(
        "SELECT count(DISTINCT loc) = count(*) AND count(*) = 8 * 3000"
        "  FROM sitemap_urls WHERE job_id = $1",
        ctx.job.id,
    )


async def test_a_chunk_committed_after_its_caller_was_cancelled_is_still_counted(
    direct, direct_dsn, pool, settings
):
    ctx = await claimed_context(direct, pool, settings)
    file_id = await open_file(ctx, "https://a.test/1.xml", None, None, 0, "given")
    counts: list[int] = []
    async with table_locked(direct_dsn, "sitemap_urls_stored"):
        caller = asyncio.ensure_future(
            UrlWriter(ctx, stored_before=0).store(
                file_id, pages("https://a.test/p1", "https://a.test/p2"), counts.append
            )
        )
        await until_a_statement_waits_on_a_lock(direct)
        caller.cancel()  # e.g. the file's fetch deadline
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, 10)
    assert counts == [2]
    assert (
        await direct.fetchval("SELECT count(*) FROM sitemap_urls WHERE job_id = $1", ctx.job.id)
        == 2
    )
