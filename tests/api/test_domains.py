"""The domain endpoints (issue 19) on the real application (build_app, real keys) on
127.0.0.1 over a real PostgreSQL, directly and through PgBouncer. The rows are written with
SQL, as the worker writes them: real jobs, domains, domain_scans, url_changes and
sitemap_urls rows."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from openapi_spec_validator import validate

from tests.api.conftest import Api
from tests.api.test_results import Server, add_file, add_urls

D = "/api/v3/domains"


@pytest.fixture
async def server(api: Api, make_key: Callable[..., Awaitable[str]]) -> Server:
    keys: dict[str | None, str] = {t: await make_key("tenant", t) for t in ("acme", "other")}
    keys[None] = await make_key("admin")
    keys["acme-ro"] = await make_key("read_only", "acme")
    return Server(api, keys)


async def add_job(conn: asyncpg.Connection, tenant: str | None, status: str = "completed") -> int:
    payload = {"domain": "example.com", **({"tenant_id": tenant} if tenant else {})}
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, payload, status, finished_at)"
        " VALUES ('sitemap_scan', $1::jsonb, $2, now()) RETURNING id",
        json.dumps(payload),
        status,
    )


async def add_domain(conn: asyncpg.Connection, tenant: str | None, domain: str, **cols: Any) -> int:
    names = ["tenant_id", "domain", *cols]
    values = [tenant, domain, *cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    return await conn.fetchval(
        f"INSERT INTO domains ({', '.join(names)}) VALUES ({marks}) RETURNING id", *values
    )


async def add_scan(conn: asyncpg.Connection, domain_id: int, job_id: int, **cols: Any) -> None:
    cols = {"status": "completed", **cols}
    names = ["domain_id", "job_id", *cols]
    values = [domain_id, job_id, *cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    await conn.execute(f"INSERT INTO domain_scans ({', '.join(names)}) VALUES ({marks})", *values)


async def call(server: Server, method: str, path: str, who: str | None, body: Any = None):
    """(status, JSON body) of one call with `who`'s key."""
    headers = {"Authorization": f"Bearer {server.keys[who]}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    data = None if body is None else json.dumps(body)
    url = server.api.url + path
    async with server.api.http.request(method, url, headers=headers, data=data) as resp:
        return resp.status, await resp.json()


async def test_list_by_name_in_keyset_pages_with_filters(server: Server, direct):
    for name in ("c.test", "a.test", "b.test", "d.test"):
        await add_domain(
            direct, "acme", name, rescan_interval=timedelta(hours=1) if name == "b.test" else None
        )
    await add_domain(direct, "other", "a.test")
    await add_domain(direct, None, "z.test")

    seen, path = [], f"{D}?limit=3"
    while path:
        code, page = await call(server, "GET", path, "acme")
        assert code == 200, page
        seen += [d["domain"] for d in page["domains"]]
        path = page["next"]
        assert (page["next_cursor"] is None) == (path is None)
    assert seen == ["a.test", "b.test", "c.test", "d.test"]

    code, page = await call(server, "GET", f"{D}?watched=true", "acme")
    assert [d["domain"] for d in page["domains"]] == ["b.test"]
    watched = page["domains"][0]
    assert watched["rescan_interval"] == "PT1H" and watched["rescan_interval_seconds"] == 3600
    assert watched["url"] == "/api/v3/domains/b.test?tenant_id=acme"
    code, page = await call(server, "GET", f"{D}?watched=false&prefix=c", "acme")
    assert [d["domain"] for d in page["domains"]] == ["c.test"]

    code, page = await call(server, "GET", f"{D}?limit=2", None)  # admin: every tenant
    names = [(d["domain"], d["tenant_id"]) for d in page["domains"]]
    assert names == [("a.test", "acme"), ("a.test", "other")]
    code, page = await call(server, "GET", f"{D}?tenant_id=other", None)
    assert [(d["domain"], d["tenant_id"]) for d in page["domains"]] == [("a.test", "other")]
    code, page = await call(server, "GET", f"{D}?tenant_id=other", "acme")  # not its own
    assert code == 200 and page["domains"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("watched=maybe", "watched"), ("cursor=%21%21", "cursor"),
     ("colour=red", "colour")],
)  # fmt: skip
async def test_bad_list_parameters_are_422_naming_the_field(server: Server, query, field):
    code, body = await call(server, "GET", f"{D}?{query}", "acme")
    assert code == 422, body
    assert body["details"][0]["loc"] == ["query", field], body


async def test_one_domain_with_its_history_by_any_spelling(server: Server, direct):
    first = await add_job(direct, "acme")
    failed = await add_job(direct, "acme", "failed")
    last = await add_job(direct, "acme")
    domain_id = await add_domain(
        direct, "acme", "example.com", first_job_id=first, last_job_id=last,
        last_status="completed", last_completed_job_id=last, url_count=120, sitemap_count=3,
        last_scanned_at=datetime.now(UTC), last_completed_at=datetime.now(UTC),
    )  # fmt: skip
    await add_scan(direct, domain_id, first, url_count=100, added=100, removed=0, changed=0,
                   complete=True)  # fmt: skip
    await add_scan(direct, domain_id, failed, status="failed")
    await add_scan(direct, domain_id, last, previous_job_id=first, url_count=120, added=30,
                   removed=10, changed=5, complete=False)  # fmt: skip

    for spelling in ("example.com", "Example.COM", "https%3A%2F%2Fexample.com%2F", "example.com."):
        code, view = await call(server, "GET", f"{D}/{spelling}", "acme")
        assert code == 200, (spelling, view)
        assert view["domain"] == "example.com" and view["url_count"] == 120
    assert [s["job_id"] for s in view["scans"]] == [last, failed, first]
    newest = view["scans"][0]
    assert (newest["added"], newest["removed"], newest["changed"]) == (30, 10, 5)
    assert newest["complete"] is False and newest["previous_job_id"] == first
    assert newest["status_url"] == f"/api/v3/sitemap/status/{last}"
    assert view["scans"][1]["status"] == "failed"
    assert view["urls_url"] == "/api/v3/domains/example.com/urls?tenant_id=acme"
    code, view = await call(server, "GET", f"{D}/example.com?scans=1", "acme")
    assert [s["job_id"] for s in view["scans"]] == [last]

    missing = await call(server, "GET", f"{D}/nowhere.test", "acme")
    assert missing == (404, {"error": "no such domain", "details": []})
    assert await call(server, "GET", f"{D}/example.com", "other") == missing
    assert await call(server, "GET", f"{D}/example.com?tenant_id=acme", "other") == missing
    assert await call(server, "GET", f"{D}/example.com", None) == missing  # no tenant-less row
    code, view = await call(server, "GET", f"{D}/example.com?tenant_id=acme", None)
    assert code == 200 and view["tenant_id"] == "acme"


@pytest.mark.parametrize("bad", ["exa%20mple.com", "javascript:alert(1)", "a..b", "x" * 300])
async def test_a_path_that_is_no_domain_is_422(server: Server, bad):
    code, body = await call(server, "GET", f"{D}/{bad}", "acme")
    assert code == 422, body
    assert body["details"][0]["loc"] == ["path", "domain"] and body["details"][0]["msg"]


async def test_put_watches_a_domain_never_scanned_then_changes_and_clears(server: Server, direct):
    code, view = await call(server, "PUT", f"{D}/New.Example", "acme", {"rescan_interval": "1 day"})
    assert code == 200, view
    assert view["domain"] == "new.example" and view["tenant_id"] == "acme"
    assert view["rescan_interval"] == "P1D" and view["rescan_interval_seconds"] == 86400
    assert view["last_job_id"] is None and view["scans"] == []
    row = await direct.fetchrow(
        "SELECT rescan_interval, next_scan_at <= now() AS due FROM domains"
        " WHERE tenant_id = 'acme' AND domain = 'new.example'"
    )
    assert row["rescan_interval"] == timedelta(days=1) and row["due"]
    # pushed into the future (as a scheduler would after a scan); a shorter interval brings it
    # no later than now + the interval, and a repeat of the same PUT does not make it due now
    await direct.execute("UPDATE domains SET next_scan_at = now() + interval '1 day'")
    code, view = await call(server, "PUT", f"{D}/new.example", "acme", {"rescan_interval": "PT1H"})
    assert code == 200 and view["rescan_interval"] == "PT1H"
    assert await direct.fetchval(
        "SELECT next_scan_at BETWEEN now() + interval '59 minutes' AND now() + interval '1 hour'"
        " FROM domains WHERE domain = 'new.example'"
    )
    code, view = await call(server, "PUT", f"{D}/new.example", "acme", {"rescan_interval": 3600})
    assert code == 200 and view["next_scan_at"] is not None
    assert await direct.fetchval("SELECT next_scan_at > now() FROM domains")
    code, view = await call(server, "PUT", f"{D}/new.example", "acme", {"rescan_interval": None})
    assert code == 200 and view["rescan_interval"] is None and view["next_scan_at"] is None
    assert await direct.fetchval("SELECT count(*) FROM domains") == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"rescan_interval": 30}, "at least 1 minute"),
        ({"rescan_interval": "59 seconds"}, "at least 1 minute"),
        ({"rescan_interval": "1 month"}, "not a duration"),
        ({"rescan_interval": "soon"}, "not a duration"),
        ({"rescan_interval": "P3651D"}, "at most 3650 days"),
        ({"rescan_interval": True}, "must be seconds"),
        ({"rescan_interval": 1.5}, "must be seconds"),
        ({}, "required"),
        ({"rescan_interval": "1 day", "extra": 1}, "Extra inputs"),
    ],
)
async def test_a_bad_interval_is_a_readable_422_and_writes_nothing(
    server: Server, direct, body, words
):
    code, answer = await call(server, "PUT", f"{D}/example.com", "acme", body)
    assert code == 422, answer
    assert any(words in d["msg"] for d in answer["details"]), answer
    assert await direct.fetchval("SELECT count(*) FROM domains") == 0


async def test_put_follows_the_tenant_rules(server: Server, direct):
    theirs = await add_domain(direct, "other", "example.com")
    body = {"rescan_interval": "1 hour"}
    code, answer = await call(server, "PUT", f"{D}/example.com", "acme-ro", body)
    assert (code, answer["error"]) == (403, "this key is read-only")
    code, answer = await call(server, "PUT", f"{D}/example.com?tenant_id=other", "acme", body)
    assert (code, answer["error"]) == (404, "no such domain")
    assert await direct.fetchval("SELECT count(*) FROM domains") == 1
    assert await direct.fetchval(
        "SELECT rescan_interval FROM domains WHERE id = $1", theirs
    ) is None  # fmt: skip
    code, view = await call(server, "PUT", f"{D}/example.com", "acme", body)  # its own row
    assert code == 200 and view["tenant_id"] == "acme"
    code, view = await call(server, "PUT", f"{D}/example.com?tenant_id=other", None, body)
    assert code == 200 and view["tenant_id"] == "other" and view["rescan_interval"] == "PT1H"
    assert await direct.fetchval("SELECT count(*) FROM domains") == 2


async def test_current_urls_are_the_last_completed_scans_in_pages_and_exports(
    server: Server, direct
):
    old = await add_job(direct, "acme")
    await add_urls(direct, old, await add_file(direct, old, "https://example.com/a.xml"), 7)
    current = await add_job(direct, "acme")
    file_id = await add_file(direct, current, "https://example.com/a.xml")
    await add_urls(direct, current, file_id, 250)
    await add_domain(
        direct, "acme", "example.com", last_completed_job_id=current, last_job_id=current
    )
    seen, path = [], f"{D}/Example.com/urls?limit=100"
    while path:
        code, page = await call(server, "GET", path, "acme")
        assert code == 200, page
        assert page["job_id"] == current and page["domain"] == "example.com"
        seen += [u["loc"] for u in page["urls"]]
        path = page["next"]
    assert seen == [f"https://example.com/p/{i}" for i in range(1, 251)]

    async with server.get(f"{D}/example.com/urls", "acme", format="csv") as resp:
        assert resp.status == 200, await resp.text()
        assert 'filename="example.com-urls.csv"' in resp.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(await resp.text(), newline="")))
    assert len(rows) == 250 and rows[13]["images"]
    async with server.get(f"{D}/example.com/urls", "acme", format="ndjson") as resp:
        lines = (await resp.text()).splitlines()
    assert [json.loads(x)["loc"] for x in lines] == seen
    for fmt in ("json", "csv", "ndjson"):
        async with server.get(f"{D}/example.com/urls", "other", format=fmt) as resp:
            assert resp.status == 404


async def test_a_domain_with_no_completed_scan_has_an_empty_current_set(server: Server, direct):
    failed = await add_job(direct, "acme", "failed")
    await add_domain(direct, "acme", "example.com:8080", last_job_id=failed, last_status="failed")
    code, page = await call(server, "GET", f"{D}/example.com:8080/urls", "acme")
    assert code == 200, page
    assert (page["job_id"], page["count"], page["urls"], page["next"]) == (None, 0, [], None)
    async with server.get(f"{D}/example.com:8080/urls", "acme", format="csv") as resp:
        assert resp.status == 200
        assert 'filename="example.com_8080-urls.csv"' in resp.headers["Content-Disposition"]
        assert (await resp.text()).startswith("loc,lastmod,")
        assert len((await resp.text()).splitlines()) == 1


async def test_changes_since_a_job_or_a_time_by_kind_in_pages(server: Server, direct):
    first, second = await add_job(direct, "acme"), await add_job(direct, "acme")
    domain_id = await add_domain(direct, "acme", "example.com", last_completed_job_id=second)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    changes = [
        (first, "added", "https://example.com/1", t0),
        (first, "added", "https://example.com/2", t0),
        (second, "removed", "https://example.com/1", t0 + timedelta(days=1)),
        (second, "changed", "https://example.com/2", t0 + timedelta(days=1)),
        (second, "added", "https://example.com/3", t0 + timedelta(days=1)),
    ]
    for job, change, loc, at in changes:
        await direct.execute(
            "INSERT INTO url_changes (domain_id, job_id, change, loc, lastmod_before,"
            " lastmod_after, detected_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            domain_id, job, change, loc,
            t0 if change == "changed" else None, at if change == "changed" else None, at,
        )  # fmt: skip

    async def walk(query: str, who: str = "acme") -> list[tuple[int, str, str]]:
        out, path = [], f"{D}/example.com/changes?{query}"
        while path:
            code, page = await call(server, "GET", path, who)
            assert code == 200, page
            out += [(c["job_id"], c["change"], c["loc"]) for c in page["changes"]]
            path = page["next"]
        return out

    everything = [(j, c, loc) for j, c, loc, _ in changes]
    assert await walk("limit=2") == everything
    assert await walk(f"since={first}&limit=1") == everything[2:]
    assert await walk("since=2026-01-01T12:00:00Z") == everything[2:]
    assert await walk("since=2026-01-01T12:00:00") == everything[2:]  # no offset: UTC
    assert await walk("change=added&limit=1") == [everything[i] for i in (0, 1, 4)]
    code, page = await call(server, "GET", f"{D}/example.com/changes?change=changed", "acme")
    assert page["changes"][0]["lastmod_before"].startswith("2026-01-01")
    code, page = await call(server, "GET", f"{D}/example.com/changes?since=yesterday", "acme")
    assert code == 422 and page["details"][0]["loc"] == ["query", "since"]
    code, page = await call(server, "GET", f"{D}/example.com/changes?change=moved", "acme")
    assert code == 422 and page["details"][0]["loc"] == ["query", "change"]
    code, page = await call(server, "GET", f"{D}/example.com/changes", "other")
    assert (code, page["error"]) == (404, "no such domain")


async def test_the_openapi_document_has_the_domain_routes_and_every_query_parameter(api: Api):
    code, doc = await api.json("GET", "/api/v3/openapi.json")
    assert code == 200
    validate(doc)
    paths = doc["paths"]
    for path, method in [
        (D, "get"),
        (f"{D}/{{domain}}", "get"),
        (f"{D}/{{domain}}", "put"),
        (f"{D}/{{domain}}/urls", "get"),
        (f"{D}/{{domain}}/changes", "get"),
    ]:
        assert method in paths[path], (path, method)

    def params(path: str, method: str = "get") -> set[str]:
        return {p["name"] for p in paths[path][method]["parameters"]}

    assert {"limit", "cursor", "format", "job_id"} <= params("/api/v3/sitemap/jobs/{job_id}/urls")
    assert {"watched", "tenant_id", "cursor", "limit"} <= params(D)
    assert {"domain", "since", "change", "cursor", "limit"} <= params(f"{D}/{{domain}}/changes")
    assert {"domain", "format", "cursor", "limit"} <= params(f"{D}/{{domain}}/urls")
    put = paths[f"{D}/{{domain}}"]["put"]
    assert {"200", "401", "403", "404", "422"} <= set(put["responses"])
    ref = put["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert "rescan_interval" in doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
