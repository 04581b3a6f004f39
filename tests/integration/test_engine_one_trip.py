"""connections.OneTrip, the claim's one-round-trip path: arguments written into the text as
literals, the answer read back from COPY text. Every awkward value must come back exactly
as sent, through the direct server and through PgBouncer (the `pool` fixture runs both)."""

from __future__ import annotations

import json

import asyncpg
import pytest

from worker import connections
from worker.sql import q

AWKWARD = [
    "",
    "plain",
    "it's",
    "back\\slash \\N \\t",
    "tab\there\nnew line\r\x0b\x0c",
    "\x1c\x1d\x1e\x85\u2028 separators str.splitlines would split on",
    "ünïcödé ✓ 😀",
    "E'\\'' OR 1=1; --",
    "$1 $2 $$ dollar",
]

ECHO_COLUMNS = (("n", int), ("text", str), ("flag", connections.copy_bool), ("x", float))


async def test_awkward_text_comes_back_as_sent(pool: asyncpg.Pool) -> None:
    trip = connections.OneTrip(pool, timeout=10, columns=ECHO_COLUMNS)
    rows = await trip.fetch(
        "SELECT n::int, t, n % 2 = 0, $2::float8 FROM unnest($1::text[]) WITH ORDINALITY "
        "AS u (t, n) ORDER BY n",
        AWKWARD,
        0.25,
    )
    assert [r["text"] for r in rows] == AWKWARD
    assert [r["n"] for r in rows] == list(range(1, len(AWKWARD) + 1))
    assert [r["flag"] for r in rows] == [n % 2 == 0 for n in range(1, len(AWKWARD) + 1)]
    assert {r["x"] for r in rows} == {0.25}


async def test_nulls_and_empty_arrays(pool: asyncpg.Pool) -> None:
    trip = connections.OneTrip(pool, timeout=10, columns=(("a", int), ("b", str)))
    rows = await trip.fetch("SELECT cardinality($1::bigint[]), $2::text", [], None)
    assert rows == [{"a": 0, "b": None}]


def test_literals_refuse_what_postgresql_cannot_hold() -> None:
    with pytest.raises(ValueError, match="NUL"):
        connections.literal("a\x00b")
    with pytest.raises(ValueError, match="finite"):
        connections.literal(float("nan"))
    with pytest.raises(TypeError):
        connections.literal(object())


async def test_a_statement_with_a_comment_or_a_quote_is_refused(pool: asyncpg.Pool) -> None:
    """A literal filled into a comment could end it with a newline; one filled into a quoted
    string would be a different string: such statements are refused, not sent."""
    trip = connections.OneTrip(pool, timeout=10, columns=(("a", str),))
    for sql in ("SELECT $1::text -- trailing", "SELECT $1::text || '$2'", "SELECT /* $1 */ 1"):
        with pytest.raises(ValueError, match="without comments or quotes"):
            await trip.fetch(sql, "x\nSELECT 1", "y")
    assert await trip.fetch("-- a comment line is dropped\nSELECT $1::text", "ok") == [{"a": "ok"}]


async def test_the_claim_statement_claims_and_completes_in_one_trip(
    pool: asyncpg.Pool, direct: asyncpg.Connection
) -> None:
    """sitemap_worker_end_and_claim through OneTrip: the completion written (durably: the
    statement has no synchronous_commit override then), the next job claimed with every
    column typed, and a payload with awkward text intact."""
    from worker.engine import CLAIM_COLUMNS

    payload = {"seconds": 0, "note": AWKWARD[3] + AWKWARD[4] + AWKWARD[5]}
    first, second = [
        await direct.fetchval(
            "INSERT INTO jobs (job_type, payload, priority) VALUES ('noop', $1::jsonb, $2) "
            "RETURNING id",
            json.dumps(payload),
            priority,
        )
        for priority in (2, 1)
    ]
    trip = connections.OneTrip(pool, timeout=10, columns=CLAIM_COLUMNS)
    [claimed] = await trip.fetch(q("end_and_claim"), "w1", [], [], 1, 30.0, [])
    assert claimed["claimed"] is True and claimed["id"] == first
    assert json.loads(claimed["payload"]) == payload
    assert (claimed["attempts"], claimed["max_attempts"], claimed["priority"]) == (1, 3, 2)
    assert claimed["parent_id"] is None and claimed["waited"] >= 0
    answer = await trip.fetch(
        q("end_and_claim"), "w1", [first], ['{"said": "it\'s \\\\ done"}'], 1, 30.0, [first]
    )
    assert {(r["id"], r["claimed"]) for r in answer} == {(first, False), (second, True)}
    row = await direct.fetchrow("SELECT status, result, finished_at FROM jobs WHERE id = $1", first)
    assert row["status"] == "completed" and row["finished_at"] is not None
    assert json.loads(row["result"]) == {"said": "it's \\ done"}


async def test_the_claim_and_the_completion_announce_their_status_changes(
    pool: asyncpg.Pool, direct: asyncpg.Connection
) -> None:
    """They notify the status channel themselves (jobs_notify_status skips their statements,
    migration 0015), with the payloads the trigger sends: one per new status, ids sorted."""
    import asyncio

    heard: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    await direct.add_listener(
        "sitemap_worker_status", lambda *args: heard.put_nowait(json.loads(args[-1]))
    )
    ids = [
        await direct.fetchval("INSERT INTO jobs (job_type) VALUES ('noop') RETURNING id")
        for _ in range(3)
    ]
    from worker.engine import CLAIM_COLUMNS

    trip = connections.OneTrip(pool, timeout=10, columns=CLAIM_COLUMNS)
    await trip.fetch(q("end_and_claim"), "w1", [], [], 3, 30.0, [])
    assert await asyncio.wait_for(heard.get(), 5) == {"status": "processing", "ids": ids}
    await trip.fetch(q("end_and_claim"), "w1", ids[:2], ["{}", "{}"], 0, 30.0, ids)
    assert await asyncio.wait_for(heard.get(), 5) == {"status": "completed", "ids": ids[:2]}
    # Any other UPDATE is still announced by the trigger.
    await direct.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", ids[2])
    assert await asyncio.wait_for(heard.get(), 5) == {"status": "cancelled", "ids": [ids[2]]}
    assert heard.empty()


async def test_the_claim_announces_what_changed_status_and_nothing_else(
    pool: asyncpg.Pool, direct: asyncpg.Connection
) -> None:
    """From the rows its UPDATE returned (migration 0019): a pending job claimed is
    announced `processing`, one at the attempts limit `failed` (and not returned), and a
    processing job taken over from a dead worker, whose status does not change, not at all."""
    import asyncio

    heard: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    await direct.add_listener(
        "sitemap_worker_status", lambda *args: heard.put_nowait(json.loads(args[-1]))
    )
    fresh = await direct.fetchval("INSERT INTO jobs (job_type) VALUES ('noop') RETURNING id")
    at_limit = await direct.fetchval(
        "INSERT INTO jobs (job_type, attempts) VALUES ('noop', 10000) RETURNING id"
    )
    orphan = await direct.fetchval(
        "INSERT INTO jobs (job_type, status, owner, attempts, lease_expires_at)"
        " VALUES ('noop', 'processing', 'dead', 1, now() - interval '1 minute') RETURNING id"
    )
    from worker.engine import CLAIM_COLUMNS

    trip = connections.OneTrip(pool, timeout=10, columns=CLAIM_COLUMNS)
    answer = await trip.fetch(q("end_and_claim"), "w1", [], [], 3, 30.0, [])
    assert {r["id"] for r in answer if r["claimed"]} == {fresh, orphan}
    said = [await asyncio.wait_for(heard.get(), 5) for _ in range(2)]
    assert sorted(said, key=lambda n: str(n["status"])) == [
        {"status": "failed", "ids": [at_limit]},
        {"status": "processing", "ids": [fresh]},
    ]
    # A later notification, from another session, arrives after anything the claim sent.
    await direct.execute('NOTIFY sitemap_worker_status, \'{"status": "end"}\'')
    assert await asyncio.wait_for(heard.get(), 5) == {"status": "end"}
    rows = {
        r["id"]: r
        for r in await direct.fetch("SELECT id, status, owner, attempts, error FROM jobs")
    }
    assert (rows[orphan]["status"], rows[orphan]["owner"], rows[orphan]["attempts"]) == (
        "processing",
        "w1",
        2,
    )
    assert rows[at_limit]["status"] == "failed"
    assert "attempts reached the limit of 10000" in rows[at_limit]["error"]
