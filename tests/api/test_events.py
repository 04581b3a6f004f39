"""GET /api/v3/events on the real application (build_app, real keys) over a real PostgreSQL,
directly and through PgBouncer (LISTEN always direct): a status change reaches its tenant's
streams only, a burst arrives as a few coalesced events, a lost listener says `resync`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from tests.api.conftest import Api
from worker.api.events import EVENTS
from worker.api.events_hub import ClientFeed
from worker.api.scope import Scope


class Stream:
    """A client of the event stream: one parsed event at a time, comments skipped."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.status_events: list[list[dict[str, Any]]] = []

    async def next(self, timeout: float = 15.0) -> tuple[str, Any]:
        event, data = "message", ""
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                assert raw, "the stream ended"
                line = raw.decode().rstrip("\n")
                if line == "":
                    if data:
                        parsed = json.loads(data)
                        if event == "status":
                            self.status_events.append(parsed)
                        return event, parsed
                    continue
                if line.startswith((":", "retry:")):
                    continue
                name, _, value = line.partition(": ")
                if name == "event":
                    event = value
                elif name == "data":  # several data lines join with a newline
                    data = f"{data}\n{value}" if data else value

    async def until_jobs(self, wanted: dict[int, str]) -> set[int]:
        """Read status events until every job in `wanted` was seen in its status; returns
        every job id the stream carried meanwhile."""
        seen: set[int] = set()
        missing = dict(wanted)
        while missing:
            event, data = await self.next()
            assert event == "status", (event, data)
            for row in data:
                seen.add(row["job_id"])
                if missing.get(row["job_id"]) == row["status"]:
                    del missing[row["job_id"]]
        return seen


@asynccontextmanager
async def stream(api: Api, key: str | None) -> AsyncIterator[Stream]:
    async with api.get("/api/v3/events", key=key) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        s = Stream(response)
        assert await s.next() == ("ready", {"listening": True})
        yield s


async def add_jobs(conn: asyncpg.Connection, tenant: str, count: int = 1) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO jobs (job_type, payload) SELECT 'noop', jsonb_build_object('tenant_id', $1::text)"
        " FROM generate_series(1, $2::int) RETURNING id",
        tenant,
        count,
    )
    return [r["id"] for r in rows]


async def set_status(conn: asyncpg.Connection, ids: list[int], status: str) -> None:
    await conn.execute("UPDATE jobs SET status = $2 WHERE id = ANY($1::bigint[])", ids, status)


MakeKey = Callable[..., Awaitable[str]]


async def test_a_completion_reaches_its_tenants_streams_only(api: Api, make_key: MakeKey, direct):
    acme, other = await make_key("tenant", "acme"), await make_key("tenant", "other")
    admin = await make_key("admin")
    [a_job], [o_job] = await add_jobs(direct, "acme"), await add_jobs(direct, "other")
    async with stream(api, acme) as a, stream(api, other) as o, stream(api, admin) as everyone:
        await set_status(direct, [a_job], "completed")
        assert await a.until_jobs({a_job: "completed"}) == {a_job}
        await set_status(direct, [o_job], "completed")
        # other's stream: its own job, and never acme's (which changed first)
        assert await o.until_jobs({o_job: "completed"}) == {o_job}
        assert await everyone.until_jobs({a_job: "completed", o_job: "completed"}) == {
            a_job,
            o_job,
        }
    row = a.status_events[0][0]
    assert row["tenant_id"] == "acme" and row["job_type"] == "noop"
    assert row["finished_at"] and row["updated_at"] and row["status"] == "completed"


async def test_a_burst_arrives_as_a_few_coalesced_events(api: Api, make_key: MakeKey, direct):
    key = await make_key("tenant", "acme")
    burst = await add_jobs(direct, "acme", 10_000)
    noise = await add_jobs(direct, "other", 500)
    singles = await add_jobs(direct, "acme", 100)
    hub = api.app[EVENTS].hub
    async with stream(api, key) as s:
        # one statement: 20 notifications of 500 ids (plus another tenant's)
        await set_status(direct, noise + burst, "cancelled")
        seen = await s.until_jobs(dict.fromkeys(burst, "cancelled"))
        assert seen == set(burst)
        assert len(s.status_events) <= 2, [len(e) for e in s.status_events]
        # 100 statements one after another, each its own notification
        before = len(s.status_events)
        for job_id in singles:
            await set_status(direct, [job_id], "processing")
        assert await s.until_jobs(dict.fromkeys(singles, "processing")) == set(singles)
        assert len(s.status_events) - before <= 25  # a window gathers several commits
    assert hub.windows <= len(s.status_events) + 1
    assert all(len({r["job_id"] for r in e}) == len(e) for e in s.status_events)


async def test_a_lost_listener_tells_clients_to_resync(api: Api, direct):
    async with stream(api, None) as s:
        killed = await direct.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'sitemap-worker-listener'"
        )
        assert killed == 1
        assert await s.next() == ("resync", {})
        listener = api.app[EVENTS].listener
        assert listener is not None
        await listener.listening.wait()
        [job] = await add_jobs(direct, "acme")
        await set_status(direct, [job], "completed")
        assert await s.until_jobs({job: "completed"}) == {job}


async def test_a_client_that_leaves_is_dropped(api: Api):
    service = api.app[EVENTS]
    service.heartbeat = 0.05  # the dead socket shows on the next write
    async with stream(api, None):
        assert service.hub.clients == 1
    async with asyncio.timeout(10):
        while service.hub.clients:
            await asyncio.sleep(0.02)


def test_a_slow_clients_feed_is_bounded_and_keeps_the_latest_row():
    feed = ClientFeed(Scope(tenant_id="acme", admin=False), backlog=100)
    feed.offer([(1, '{"s":"processing"}'), (2, "b")])
    feed.offer([(1, '{"s":"completed"}')])
    assert feed.take() == (['{"s":"completed"}', "b"], False)
    assert not feed.ready.is_set()
    feed.offer([(i, "x") for i in range(101)])  # more than it may hold: drop, say resync
    assert feed.take() == ([], True)


@pytest.mark.parametrize("header", [None, "Bearer nope"])
async def test_events_need_a_key_once_keys_exist(api: Api, make_key: MakeKey, header):
    await make_key("tenant", "acme")
    headers = {"Authorization": header} if header else {}
    async with api.get("/api/v3/events", headers=headers) as response:
        assert response.status == 401
