"""Bad input gets a clear JSON error and changes nothing; Idempotency-Key makes one job
however many requests race; the OpenAPI document validates and lists every route."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from openapi_spec_validator import validate

SCAN, BATCH = "/api/v3/sitemap/scan", "/api/v3/sitemap/batch"


@pytest.mark.parametrize(
    "body, loc",
    [
        ({}, ["body", "domain"]),
        ({"domain": 5}, ["body", "domain"]),
        ({"domain": "javascript:alert(1)"}, ["body", "domain"]),
        ({"domain": "exa mple.com"}, ["body", "domain"]),
        ({"domain": "example.com", "max_urls": "10"}, ["body", "max_urls"]),
        ({"domain": "example.com", "max_urls": 0}, ["body", "max_urls"]),
        ({"domain": "example.com", "priority": 10**7}, ["body", "priority"]),
        ({"domain": "example.com", "meta": [1]}, ["body", "meta"]),
        ({"domain": "example.com", "colour": "red"}, ["body", "colour"]),
    ],
)
async def test_scan_body_errors_name_the_field(api, direct, body, loc):
    code, answer = await api.json("POST", SCAN, body)
    assert code == 422, answer
    assert loc in [d["loc"] for d in answer["details"]], answer
    assert all(d["msg"] for d in answer["details"])
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"", "JSON object"),
        (b'{"domain": NaN}', "not valid JSON"),
        (b'{"domain": "a\\u0000b.com"}', "cannot be stored"),
    ],
)
async def test_malformed_bodies(api, direct, raw, why):
    async with api.post(SCAN, data=raw) as r:
        answer = await r.json()
        assert r.status == 422 and why in answer["error"], answer
        assert answer["details"]
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 0


async def test_body_over_the_limit_is_413(api, direct):
    big = json.dumps({"domain": "example.com", "meta": {"x": "y" * (1024 * 1024)}})
    async with api.http.post(api.url + SCAN, data=io.BytesIO(big.encode())) as r:
        assert r.status == 413 and "1048576" in (await r.json())["error"]
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 0


async def test_batch_limits_and_bad_domains(start_api, direct):
    api = await start_api(api_max_batch_domains=3)
    code, answer = await api.json("POST", BATCH, {"domains": [f"s{i}.example" for i in range(4)]})
    assert code == 422 and "at most 3" in answer["error"]
    code, answer = await api.json("POST", BATCH, {"domains": ["ok.example", "ftp://x", 7]})
    assert code == 422
    assert [d["loc"] for d in answer["details"]] == [["body", "domains", 2]]  # a number: type
    code, answer = await api.json("POST", BATCH, {"domains": ["ok.example", "ftp://x"]})
    assert code == 422 and answer["details"][0]["loc"] == ["body", "domains", 1]
    code, answer = await api.json("POST", BATCH, {"domains": []})
    assert code == 422
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 0
    code, answer = await api.json(
        "POST", BATCH, {"domains": ["a.example", "b.example"], "max_pages": 5}
    )
    assert code == 202 and answer["status"] == "pending"


async def test_unknown_routes_methods_and_ids(api):
    for path in (
        "/api/v3/nothing",
        "/api/v3/jobs/0",
        "/api/v3/jobs/abc",
        "/api/v3/jobs/99999999999999999999",
        "/api/v3/sitemap/status/12",
    ):
        code, answer = await api.json("GET", path)
        assert code == 404 and answer["error"], path
    async with api.request("DELETE", "/api/v3/jobs") as r:
        assert r.status == 405 and "DELETE" in (await r.json())["error"]
        assert "GET" in r.headers["Allow"]
    async with api.request("GET", SCAN) as r:
        assert r.status == 405
    code, answer = await api.json("GET", "/api/v3/jobs?limit=0&status=done")
    assert code == 422
    assert {tuple(d["loc"]) for d in answer["details"]} == {("query", "limit"), ("query", "status")}


async def test_idempotency_key_makes_one_job_under_concurrency(api, make_key, direct):
    headers = {"Idempotency-Key": "order-42"}
    answers = await asyncio.gather(
        *(api.json("POST", SCAN, {"domain": "example.com"}, headers=headers) for _ in range(8))
    )
    assert {code for code, _ in answers} == {202}
    assert len({body["job_id"] for _, body in answers}) == 1
    assert await direct.fetchval("SELECT count(*) FROM jobs") == 1
    # Keys are per tenant: the same key from another tenant is another job.
    a, b = await make_key("tenant", "a"), await make_key("tenant", "b")
    _, ja = await api.json("POST", SCAN, {"domain": "example.com"}, key=a, headers=headers)
    _, jb = await api.json("POST", SCAN, {"domain": "example.com"}, key=b, headers=headers)
    _, again = await api.json("POST", BATCH, {"domains": ["x.example"]}, key=a, headers=headers)
    assert len({answers[0][1]["job_id"], ja["job_id"], jb["job_id"]}) == 3
    assert again["job_id"] == ja["job_id"]
    code, _ = await api.json(
        "POST", SCAN, {"domain": "example.com"}, key=a, headers={"Idempotency-Key": "k" * 256}
    )
    assert code == 422


async def test_openapi_document_validates_and_lists_every_route(api):
    code, doc = await api.json("GET", "/api/v3/openapi.json")
    assert code == 200
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert doc["openapi"].startswith("3.1")
    ops = {(m.upper(), p) for p, methods in doc["paths"].items() for m in methods}
    for expected in [
        ("POST", SCAN),
        ("POST", BATCH),
        ("GET", "/api/v3/sitemap/status/{job_id}"),
        ("GET", "/api/v3/jobs"),
        ("GET", "/api/v3/jobs/{job_id}"),
        ("POST", "/api/v3/jobs/{job_id}/cancel"),
        ("POST", "/api/v3/jobs/{job_id}/retry"),
        ("GET", "/api/v3/health"),
        ("GET", "/api/v3/sitemap/jobs/{job_id}/sitemaps"),
        ("GET", "/api/v3/sitemap/jobs/{job_id}/urls"),
        ("GET", "/api/v3/events"),
    ]:
        assert expected in ops, expected
    scan = doc["paths"][SCAN]["post"]
    schema = doc["components"]["schemas"][
        scan["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert {"domain", "max_urls", "user_id", "priority", "meta"} <= set(schema["properties"])
    async with api.get("/api/docs") as r:
        page = await r.text()
        assert r.status == 200 and "/api/v3/sitemap/scan" in page and "<script" not in page
