"""Re-scans of a domain (issue 19): conditional re-fetch, storage that grows with change,
what changed, the removal guard, the domain's history, and prune after re-scans. A real
site on 127.0.0.1 (answering conditionals properly, ignoring them, or sending no
validators), the real worker, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.conditional import ConditionalSite
from worker.engine import JobLoop
from worker.jobs import default_registry

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*entries: tuple[str, str | None]) -> str:
    body = "".join(
        f"<url><loc>{loc}</loc>" + (f"<lastmod>{lastmod}</lastmod>" if lastmod else "") + "</url>"
        for loc, lastmod in entries
    )
    return f'<?xml version="1.0"?><urlset {NS}>{body}</urlset>'


def index(origin: str, *paths: str) -> str:
    body = "".join(f"<sitemap><loc>{origin}{p}</loc></sitemap>" for p in paths)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{body}</sitemapindex>'


def pages(part: int, n: int, day: int = 1) -> list[tuple[str, str | None]]:
    return [(f"https://shop.test/p{part}/{i}", f"2026-11-{day:02d}") for i in range(n)]


def build(site: ConditionalSite, parts: dict[int, list[tuple[str, str | None]]]) -> None:
    o = site.origin
    site.set("/robots.txt", f"Sitemap: {o}/sitemap_index.xml\n")
    site.set("/sitemap_index.xml", index(o, *(f"/part-{p}.xml" for p in parts)))
    for p, entries in parts.items():
        site.set(f"/part-{p}.xml", urlset(*entries))


async def scan(pool, settings, direct, domain: str, **payload):
    job_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', $1::jsonb) RETURNING id",
        json.dumps({"domain": domain, **payload}),
    )
    worker = JobLoop(pool, settings, default_registry(), concurrency=2, burst=True)
    await asyncio.wait_for(worker.run(), 60)
    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    return row, (json.loads(row["result"]) if row["result"] else None)


async def stored_rows(direct) -> int:
    return await direct.fetchval("SELECT count(*) FROM sitemap_urls_stored")


async def job_urls(direct, job_id: int) -> dict[str, object]:
    rows = await direct.fetch("SELECT loc, lastmod FROM sitemap_urls WHERE job_id = $1", job_id)
    return {r["loc"]: r["lastmod"] for r in rows}


@pytest.fixture
def private(make_settings):
    return make_settings(allow_private_networks=True)


@pytest.mark.parametrize("validators", ["proper", "ignored", "none"])
async def test_unchanged_rescan_stores_no_url_again_and_shows_every_url(
    pool, private, direct, validators
):
    async with ConditionalSite(validators) as site:
        build(site, {0: pages(0, 300), 1: pages(1, 200), 2: pages(2, 100)})
        first, r1 = await scan(pool, private, direct, site.origin)
        assert first["status"] == "completed", first["error"]
        assert r1["url_count"] == 600 and r1["previous_job_id"] is None
        assert r1["added"] is None and r1["complete"] is True
        rows_after_first = await stored_rows(direct)
        assert rows_after_first == 600
        files_after_first = await direct.fetchval("SELECT count(*) FROM sitemap_files")
        site.answers.clear()

        second, r2 = await scan(pool, private, direct, site.origin)

        assert second["status"] == "completed", second["error"]
        assert (r2["added"], r2["removed"], r2["changed"]) == (0, 0, 0)
        assert r2["previous_job_id"] == first["id"] and r2["complete"] is True
        assert r2["url_count"] == 600 and r2["unchanged_files"] == 4  # the index and 3 parts
        # No URL row added: the second scan added only its file rows.
        assert await stored_rows(direct) == rows_after_first
        new_files = await direct.fetchval("SELECT count(*) FROM sitemap_files") - files_after_first
        assert new_files == files_after_first
        assert await job_urls(direct, second["id"]) == await job_urls(direct, first["id"])
        sitemaps = [p for (p, _s) in site.answers if p != "/robots.txt"]
        if validators == "proper":  # no sitemap body downloaded at all
            assert site.answers[("/sitemap_index.xml", 304)] == 1
            assert not [p for p in sitemaps if site.answers[(p, 200)]]
            assert r2["not_modified_files"] == 4
        else:  # downloaded and hashed, not parsed or stored
            assert r2["not_modified_files"] == 0
            assert site.count(304) == 0


async def test_one_changed_file_reports_exactly_what_moved(pool, private, direct):
    async with ConditionalSite() as site:
        before = {0: pages(0, 300), 1: pages(1, 200), 2: pages(2, 100)}
        build(site, before)
        first, _ = await scan(pool, private, direct, site.origin)
        rows_after_first = await stored_rows(direct)
        # part 1: 50 URLs gone, 100 new, 20 lastmods moved
        kept = before[1][50:]
        moved = [(loc, "2026-12-01") for loc, _ in kept[:20]] + kept[20:]
        added = [(f"https://shop.test/new/{i}", None) for i in range(100)]
        site.set("/part-1.xml", urlset(*(moved + added)))

        second, r2 = await scan(pool, private, direct, site.origin)

        assert (r2["added"], r2["removed"], r2["changed"]) == (100, 50, 20)
        assert r2["url_count"] == 650 and r2["complete"] is True
        # storage grows by about that file: its 250 URLs, not the site's 650
        assert await stored_rows(direct) == rows_after_first + 250
        changes = await direct.fetch(
            "SELECT change, count(*) AS n FROM url_changes WHERE job_id = $1 GROUP BY 1",
            second["id"],
        )
        assert {r["change"]: r["n"] for r in changes} == {
            "added": 100,
            "removed": 50,
            "changed": 20,
        }
        one = await direct.fetchrow(
            "SELECT lastmod_before, lastmod_after FROM url_changes"
            " WHERE job_id = $1 AND change = 'changed' ORDER BY loc LIMIT 1",
            second["id"],
        )
        assert one["lastmod_before"] < one["lastmod_after"]
        urls = await job_urls(direct, second["id"])
        assert len(urls) == 650 and "https://shop.test/p1/0" not in urls
        history = await direct.fetch(
            "SELECT s.job_id, s.status, s.added, s.removed, s.changed, s.complete"
            "  FROM domain_scans s ORDER BY s.job_id"
        )
        assert [(h["job_id"], h["added"], h["removed"], h["changed"]) for h in history] == [
            (first["id"], None, None, None),
            (second["id"], 100, 50, 20),
        ]
        domain = await direct.fetchrow("SELECT * FROM domains")
        assert domain["domain"] == f"127.0.0.1:{site.port}"
        assert domain["first_job_id"] == first["id"]
        assert domain["last_completed_job_id"] == second["id"]
        assert domain["url_count"] == 650 and domain["last_status"] == "completed"
        assert domain["active_job_id"] is None


async def test_a_url_moving_between_files_is_neither_added_nor_removed(pool, private, direct):
    async with ConditionalSite() as site:
        build(site, {0: pages(0, 10), 1: pages(1, 10)})
        await scan(pool, private, direct, site.origin)
        # p0/0 moves from part 0 (changed) to part 1 (changed); part 2 is new
        site.set("/part-0.xml", urlset(*pages(0, 10)[1:]))
        site.set("/part-1.xml", urlset(*pages(1, 10), pages(0, 1)[0]))
        _, r2 = await scan(pool, private, direct, site.origin)
        assert (r2["added"], r2["removed"], r2["changed"]) == (0, 0, 0)
        assert r2["url_count"] == 20


async def test_a_url_listed_by_a_carried_file_and_a_changed_one_is_kept_once(pool, private, direct):
    async with ConditionalSite() as site:
        build(site, {0: pages(0, 10), 1: pages(1, 10)})
        await scan(pool, private, direct, site.origin)
        site.set("/part-1.xml", urlset(*pages(1, 10), pages(0, 1)[0]))  # part 0 unchanged
        second, r2 = await scan(pool, private, direct, site.origin)
        assert r2["unchanged_files"] == 2  # the index and part 0
        assert (r2["added"], r2["removed"], r2["changed"]) == (0, 0, 0)
        locs = await direct.fetch("SELECT loc FROM sitemap_urls WHERE job_id = $1", second["id"])
        assert len(locs) == len({r["loc"] for r in locs}) == 20 == r2["url_count"]


@pytest.mark.parametrize("kind", ["error", "cut", "max_urls"])
async def test_an_incomplete_rescan_never_reports_unread_urls_as_removed(
    pool, private, direct, kind
):
    async with ConditionalSite() as site:
        build(site, {0: pages(0, 100), 1: pages(1, 100), 2: pages(2, 100)})
        first, _ = await scan(pool, private, direct, site.origin)
        # part 0 loses 10 URLs (read whole: they are removed); part 2 cannot be read whole
        site.set("/part-0.xml", urlset(*pages(0, 100)[10:]))
        payload = {}
        if kind == "error":
            del site.files["/part-2.xml"]  # 404
        elif kind == "cut":
            body = urlset(*pages(2, 100, day=2))
            site.set("/part-2.xml", body[: len(body) // 2])  # ends mid-document
        else:
            payload = {"max_urls": 150}  # part 0 (90) is read first, then the cap cuts

        second, r2 = await scan(pool, private, direct, site.origin, **payload)

        assert second["status"] == "completed", second["error"]
        assert r2["complete"] is False and r2["incomplete"]
        removed = await direct.fetch(
            "SELECT loc FROM url_changes WHERE job_id = $1 AND change = 'removed'", second["id"]
        )
        gone = {r["loc"] for r in removed}
        whole = {
            r["url"].rsplit("/part-", 1)[1].removesuffix(".xml")
            for r in await direct.fetch(
                "SELECT url FROM sitemap_files WHERE job_id = $1 AND url LIKE '%/part-%'"
                " AND status = 'ok' AND NOT truncated",
                second["id"],
            )
        }
        # every URL reported removed was listed by a file this scan read whole
        assert {loc.split("/")[3].removeprefix("p") for loc in gone} <= whole
        if kind != "max_urls":
            assert "2" not in whole
            assert gone == {f"https://shop.test/p0/{i}" for i in range(10)}
            assert r2["removed"] == 10
        history = await direct.fetchrow(
            "SELECT complete, removed FROM domain_scans WHERE job_id = $1", second["id"]
        )
        assert history["complete"] is False and history["removed"] == r2["removed"]
        assert first["id"] < second["id"]


async def test_a_failed_scan_is_on_the_domain_history(pool, private, direct):
    async with ConditionalSite() as site:
        origin = site.origin
    # the site is gone: connection refused, the scan fails (retries are in the settings)
    job, _ = await scan(pool, private, direct, origin)
    await direct.execute("UPDATE jobs SET run_at = now() WHERE status = 'pending'")
    while job["status"] == "pending":
        worker = JobLoop(pool, private, default_registry(), concurrency=1, burst=True)
        await asyncio.wait_for(worker.run(), 30)
        await direct.execute("UPDATE jobs SET run_at = now() WHERE status = 'pending'")
        job = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", job["id"])
    assert job["status"] == "failed"
    history = await direct.fetchrow("SELECT * FROM domain_scans WHERE job_id = $1", job["id"])
    assert history["status"] == "failed"
    domain = await direct.fetchrow("SELECT * FROM domains")
    assert domain["last_status"] == "failed" and domain["last_completed_job_id"] is None
    assert domain["last_job_id"] == job["id"] and domain["last_scanned_at"] is not None


async def test_noop_and_pending_cancel_leave_domains_alone(pool, private, direct):
    await direct.execute("INSERT INTO jobs (job_type, payload) VALUES ('noop', '{}')")
    scan_id = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan', '{\"domain\": \"a.test\"}')"
        " RETURNING id"
    )
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", scan_id)
    worker = JobLoop(pool, private, default_registry(), concurrency=1, burst=True)
    await asyncio.wait_for(worker.run(), 30)
    assert await direct.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed'") == 1
    assert await direct.fetchval("SELECT count(*) FROM domains") == 0
    assert await direct.fetchval("SELECT count(*) FROM domain_scans") == 0


async def test_prune_keeps_what_a_later_scan_still_shows(pool, private, direct):
    async with ConditionalSite() as site:
        build(site, {0: pages(0, 50), 1: pages(1, 50)})
        first, _ = await scan(pool, private, direct, site.origin)
        site.set("/part-1.xml", urlset(*pages(1, 60)))
        second, _ = await scan(pool, private, direct, site.origin)
        third, r3 = await scan(pool, private, direct, site.origin)
        assert r3["unchanged_files"] == 3
        expected = await job_urls(direct, third["id"])
        assert len(expected) == 110
        await direct.execute(
            "UPDATE jobs SET finished_at = now() - interval '2 days',"
            " created_at = now() - interval '2 days' WHERE id = ANY($1::bigint[])",
            [first["id"], second["id"]],
        )
        await direct.execute("CALL sitemap_worker_prune(interval '1 day')")
        assert await direct.fetchval("SELECT count(*) FROM jobs") == 1
        # part 0's rows were read by the first scan, part 1's by the second: both kept
        assert await job_urls(direct, third["id"]) == expected
        assert await stored_rows(direct) == 110
        await direct.execute("DELETE FROM jobs WHERE id = $1", third["id"])
        assert await stored_rows(direct) == 0


async def test_url_pages_merge_carried_and_fresh_rows_in_id_order(pool, private, direct):
    async with ConditionalSite() as site:
        build(site, {0: pages(0, 40), 1: pages(1, 40)})
        await scan(pool, private, direct, site.origin)
        site.set("/part-1.xml", urlset(*pages(1, 45)))
        second, _ = await scan(pool, private, direct, site.origin)
        seen: list[int] = []
        after = 0
        while True:
            page = await direct.fetch(
                "SELECT id, loc FROM sitemap_worker_job_urls($1, $2, 7)", second["id"], after
            )
            if not page:
                break
            seen += [r["id"] for r in page]
            after = page[-1]["id"]
        assert seen == sorted(seen) and len(seen) == len(set(seen)) == 85
        assert set(seen) == {
            r["id"]
            for r in await direct.fetch(
                "SELECT id FROM sitemap_urls WHERE job_id = $1", second["id"]
            )
        }
