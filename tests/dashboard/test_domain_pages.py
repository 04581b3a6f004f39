"""The dashboard's Domains pages over real HTTP and a real database (directly and through
PgBouncer): the list, one domain's history and changes, the interval form, escaping, and
that a tenant never sees another tenant's domains."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.dashboard.conftest import Dashboard
from worker.api.scope import Scope

ACME = Scope(tenant_id="acme", admin=False, key_id=1, home_tenant="acme")


async def job(conn: asyncpg.Connection, tenant: str | None = "acme", status="completed") -> int:
    payload = {"domain": "example.com", **({"tenant_id": tenant} if tenant else {})}
    return await conn.fetchval(
        "INSERT INTO jobs (job_type, payload, status, finished_at)"
        " VALUES ('sitemap_scan', $1::jsonb, $2, now()) RETURNING id",
        json.dumps(payload),
        status,
    )


async def domain(conn: asyncpg.Connection, tenant: str | None, name: str, **cols: object) -> int:
    names = ["tenant_id", "domain", *cols]
    values = [tenant, name, *cols.values()]
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    return await conn.fetchval(
        f"INSERT INTO domains ({', '.join(names)}) VALUES ({marks}) RETURNING id", *values
    )


async def history(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """example.com of acme: two completed scans, the second with changes; (id, first, second)."""
    first, second = await job(conn), await job(conn)
    domain_id = await domain(
        conn, "acme", "example.com", first_job_id=first, last_job_id=second,
        last_status="completed", last_completed_job_id=second, url_count=150, sitemap_count=2,
        rescan_interval=timedelta(days=1), next_scan_at=datetime(2030, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    for job_id, counts, previous in ((first, (100, 0, 0), None), (second, (70, 20, 9), first)):
        await conn.execute(
            "INSERT INTO domain_scans (job_id, domain_id, status, previous_job_id, url_count,"
            " sitemap_count, added, removed, changed, complete)"
            " VALUES ($1, $2, 'completed', $3, 150, 2, $4, $5, $6, true)",
            job_id, domain_id, previous, *counts,
        )  # fmt: skip
    await conn.execute(
        "INSERT INTO url_changes (domain_id, job_id, change, loc) VALUES"
        " ($1, $2, 'added', 'https://example.com/new?<b>x</b>'),"
        " ($1, $2, 'removed', 'https://example.com/gone')",
        domain_id,
        second,
    )
    return domain_id, first, second


async def test_the_list_shows_each_domain_with_status_counts_and_interval(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    _, _, second = await history(direct)
    await domain(direct, "acme", "<script>x</script>.test")
    await domain(direct, "other", "secret.test")
    dashboard.scope = ACME
    status, page = await dashboard.get("/domains")
    assert status == 200, page
    assert 'href="/domains"' in page and "aria-current" in page  # in the nav, current
    assert 'href="/domains/example.com?tenant=acme"' in page
    assert f'href="/jobs/{second}"' in page
    row = page.split('data-domain="example.com"', 1)[1].split("</tr>", 1)[0]
    assert "completed" in row and "150" in row and "P1D" in row and "2030-01-01" in row
    assert "<script>x</script>" not in page and html.escape("<script>x</script>") in page
    assert "secret.test" not in page
    _, watched = await dashboard.get("/domains?watched=yes")
    assert "example.com" in watched and "&lt;script&gt;" not in watched
    dashboard.scope = Scope(tenant_id=None, admin=True)
    _, everything = await dashboard.get("/domains")
    assert "secret.test" in everything and "<th>Tenant</th>" in everything
    status, bad = await dashboard.get("/domains?cursor=nonsense")
    assert status == 422 and "cursor" in bad


async def test_the_list_pages_by_keyset(dashboard: Dashboard, direct: asyncpg.Connection) -> None:
    await direct.execute(
        "INSERT INTO domains (tenant_id, domain) SELECT 'acme', 'd' || lpad(g::text, 3, '0')"
        " || '.test' FROM generate_series(1, 60) g"
    )
    dashboard.scope = ACME
    _, first = await dashboard.get("/domains")
    assert "d050.test" in first and "d051.test" not in first
    nxt = html.unescape(first.split('">Next »</a>', 1)[0].rsplit('href="', 1)[1])
    _, second = await dashboard.get(nxt)
    assert "d051.test" in second and "d060.test" in second and "d050.test" not in second
    assert "Next »" not in second and "« First" in second


async def test_a_domain_page_shows_its_history_changes_and_job_links(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    _, first, second = await history(direct)
    dashboard.scope = ACME
    status, page = await dashboard.get("/domains/EXAMPLE.com")
    assert status == 200, page
    assert "Domain example.com" in page
    scans = page.split('id="scans"', 1)[1].split("</table>", 1)[0]
    assert scans.index(f'data-job="{second}"') < scans.index(f'data-job="{first}"')
    newest = scans.split(f'data-job="{second}"', 1)[1].split("</tr>", 1)[0]
    assert "<td class='num added'>70</td>" in newest
    assert "<td class='num removed'>20</td>" in newest
    assert "<td class='num changed'>9</td>" in newest
    changes = page.split('id="changes"', 1)[1].split("</table>", 1)[0]
    assert "https://example.com/gone" in changes and f'href="/jobs/{second}"' in changes
    assert "<b>x</b>" not in changes and "new?&lt;b&gt;x&lt;/b&gt;" in changes
    assert 'id="domain-interval">P1D<' in page
    assert "/api/v3/domains/example.com/urls?tenant_id=acme&amp;format=csv" in page
    assert 'id="interval-set"' in page and "disabled" not in page.split('id="watch-form"')[1][:600]


async def test_another_tenants_domain_is_a_404_page(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    await history(direct)
    dashboard.scope = Scope(tenant_id="other", admin=False, key_id=2, home_tenant="other")
    for path in ("/domains/example.com", "/domains/example.com?tenant=acme", "/domains/nope.test"):
        status, page = await dashboard.get(path)
        assert status == 404 and "was not found" in page, path
    status, _, page = await dashboard.post(
        "/domains/watch", {"domain": "example.com", "tenant": "acme", "interval": "1 hour"}
    )
    assert status == 404
    assert await direct.fetchval("SELECT rescan_interval FROM domains") == timedelta(days=1)
    status, page = await dashboard.get("/domains/exa%20mple.com")
    assert status == 422 and "contains spaces" in page


async def test_the_interval_form_sets_clears_and_refuses_bad_values(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    await history(direct)
    dashboard.scope = ACME
    form = {"domain": "example.com", "tenant": "acme", "interval": "2 hours", "action": "set"}
    status, location, _ = await dashboard.post("/domains/watch", form)
    assert (status, location) == (303, "/domains/example.com?tenant=acme&done=set")
    assert await direct.fetchval("SELECT rescan_interval FROM domains") == timedelta(hours=2)
    _, page = await dashboard.get(location)
    assert "Rescan interval set." in page and 'id="domain-interval">PT2H<' in page

    status, _, page = await dashboard.post("/domains/watch", {**form, "interval": "30 seconds"})
    assert status == 422 and "at least 1 minute" in page and 'value="30 seconds"' in page
    assert await direct.fetchval("SELECT rescan_interval FROM domains") == timedelta(hours=2)

    status, location, _ = await dashboard.post("/domains/watch", {**form, "action": "clear"})
    assert status == 303 and location.endswith("done=cleared")
    row = await direct.fetchrow("SELECT rescan_interval, next_scan_at FROM domains")
    assert row["rescan_interval"] is None and row["next_scan_at"] is None

    # from the list: a domain never scanned, typed in any spelling, watched for the tenant
    status, location, _ = await dashboard.post(
        "/domains/watch", {"domain": "https://New.Example/", "interval": "1 day", "action": "set"}
    )
    assert (status, location) == (303, "/domains/new.example?tenant=acme&done=set")
    assert await direct.fetchval(
        "SELECT tenant_id FROM domains WHERE domain = 'new.example' AND next_scan_at <= now()"
    ) == "acme"  # fmt: skip
    status, _, page = await dashboard.post(
        "/domains/watch", {"domain": "fresh.example", "interval": "soon", "action": "set"}
    )
    assert status == 422 and "not a duration" in page
    assert await direct.fetchval("SELECT count(*) FROM domains WHERE domain = 'fresh.example'") == 0


async def test_a_read_only_key_sees_the_form_disabled_and_is_refused(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    await history(direct)
    dashboard.scope = Scope(tenant_id="acme", admin=False, read_only=True, key_id=3)
    _, page = await dashboard.get("/domains/example.com")
    assert 'id="interval-set" disabled' in page
    status, _, _ = await dashboard.post(
        "/domains/watch", {"domain": "example.com", "interval": "1 hour", "action": "set"}
    )
    assert status == 403
    assert await direct.fetchval("SELECT rescan_interval FROM domains") == timedelta(days=1)


async def test_a_scans_job_page_links_to_its_domains_history(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    scan = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan',"
        ' \'{"domain": "https://Example.com/blog", "tenant_id": "acme"}\') RETURNING id'
    )
    typo = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('sitemap_scan',"
        ' \'{"domain": "exa mple.com", "tenant_id": "acme"}\') RETURNING id'
    )
    noop = await direct.fetchval(
        "INSERT INTO jobs (job_type, payload) VALUES ('noop', $1) RETURNING id",
        json.dumps({"tenant_id": "acme"}),
    )
    dashboard.scope = ACME
    _, page = await dashboard.get(f"/jobs/{scan}")
    assert '<dd id="domain-link"><a href="/domains/example.com?tenant=acme">example.com</a>' in page
    for other in (typo, noop):
        status, page = await dashboard.get(f"/jobs/{other}")
        assert status == 200 and 'id="domain-link"' not in page


async def test_scan_now_is_offered_only_where_the_scan_would_be_this_domains(
    dashboard: Dashboard, direct: asyncpg.Connection
) -> None:
    await history(direct)
    dashboard.scope = ACME
    _, page = await dashboard.get("/domains/example.com")
    form = page.split('action="/submit/scan">', 1)[1].split("</form>", 1)[0]
    assert 'name="domain" value="example.com"' in form and 'id="scan-now">' in form
    status, location, _ = await dashboard.post("/submit/scan", {"domain": "example.com"})
    assert status == 303 and location.startswith("/jobs/")
    assert await direct.fetchval(
        "SELECT tenant_id FROM jobs WHERE id = $1", int(location.rsplit("/", 1)[1])
    ) == "acme"  # fmt: skip
    dashboard.scope = Scope(tenant_id=None, admin=True)  # a scan it submits has no tenant
    _, page = await dashboard.get("/domains/example.com?tenant=acme")
    assert 'id="scan-now"' not in page
    dashboard.scope = Scope(tenant_id="acme", admin=False, read_only=True, key_id=3)
    _, page = await dashboard.get("/domains/example.com")
    assert 'id="scan-now" disabled' in page
