"""A big batch driven to its end by three real worker processes: every child runs once,
and the batch completes (counted by the database as its children end, see migration
0008), whatever order the children end in and however many end at once."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

CHILD_STARTED = re.compile(r"job (\d+) noop started \(attempt (\d+)/")


@pytest.mark.parametrize("children", [1000, pytest.param(10_000, marks=pytest.mark.slow)])
@pytest.mark.timeout(600)
async def test_three_workers_end_a_big_batch_each_child_once(spawn, direct, children, capsys):
    async with direct.transaction():  # the batch and its children appear together
        batch = await direct.fetchval(
            "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_batch', $1::jsonb) RETURNING id",
            json.dumps({"domains": ["x.example"]}),
        )
        await direct.execute(
            "INSERT INTO jobs (job_type, payload, parent_id) SELECT 'noop', '{}', $1"
            "  FROM generate_series(1, $2)",
            batch,
            children,
        )
    began = time.monotonic()
    workers = [
        await spawn("run", "--burst", "--concurrency", "10", "--no-migrate") for _ in range(3)
    ]
    codes = await asyncio.gather(*(w.wait(timeout=540) for w in workers))
    took = time.monotonic() - began
    logs = [w.log() for w in workers]
    assert codes == [0, 0, 0], "\n".join(logs)

    row = await direct.fetchrow("SELECT * FROM jobs WHERE id = $1", batch)
    stats = await direct.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'completed') AS completed,"
        "       min(attempts) AS min_attempts, max(attempts) AS max_attempts"
        "  FROM jobs WHERE parent_id = $1",
        batch,
    )
    assert (stats["n"], stats["completed"]) == (children, children)
    assert stats["min_attempts"] == stats["max_attempts"] == 1, "a child ran twice"
    assert (row["status"], row["progress"], row["owner"]) == ("completed", 1, None)
    assert (row["children_total"], row["children_ended"]) == (children, children)
    result = json.loads(row["result"])
    assert (result["domain_count"], result["completed"]) == (children, children)

    claims = [len(CHILD_STARTED.findall(log)) for log in logs]
    assert sum(claims) == children  # each child started once, in one of the workers
    lost = [line for log in logs for line in log.splitlines() if "lease" in line or "lost" in line]
    with capsys.disabled():
        print(
            f"\n{children} children, 3 workers x 10: {took:.1f} s, claims per worker {claims},"
            f" lease lines: {len(lost)}"
        )


async def test_three_workers_end_300_two_child_batches(spawn, direct, capsys):
    """The issue's case: children of many small batches end at the same moments on
    different workers (and one outcome statement ends children of several batches)."""
    async with direct.transaction():
        batches = [
            r["id"]
            for r in await direct.fetch(
                "INSERT INTO jobs (job_type, payload) SELECT 'sitemap_batch', '{\"domains\": [\"x\"]}'"
                "  FROM generate_series(1, 300) RETURNING id"
            )
        ]
        await direct.execute(
            "INSERT INTO jobs (job_type, payload, parent_id) SELECT 'noop', '{}', b"
            "  FROM unnest($1::bigint[]) AS b, generate_series(1, 2)",
            batches,
        )
    began = time.monotonic()
    workers = [
        await spawn("run", "--burst", "--concurrency", "10", "--no-migrate") for _ in range(3)
    ]
    codes = await asyncio.gather(*(w.wait(timeout=120) for w in workers))
    assert codes == [0, 0, 0], "\n".join(w.log() for w in workers)
    states = dict(
        await direct.fetch(
            "SELECT status, count(*) FROM jobs WHERE id = ANY($1::bigint[]) GROUP BY 1", batches
        )
    )
    assert states == {"completed": 300}
    assert await direct.fetchval("SELECT max(attempts) FROM jobs WHERE parent_id IS NOT NULL") == 1
    with capsys.disabled():
        print(f"\n300 two-child batches, 3 workers x 10: {time.monotonic() - began:.1f} s")
