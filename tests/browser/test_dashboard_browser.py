"""The dashboard in a real browser: submit a scan through the form and watch it complete
without a reload, open the sitemap tree, export CSV; cancel a long job with its button;
bulk-retry failed jobs by filter; log in with a key and be refused another tenant's job.
Each page is saved as a screenshot (tests/browser/artifacts/)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import WAIT_S, LiveServer, screenshot

pytestmark = pytest.mark.timeout(120)

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def wait(driver: Any, condition: Any, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A live page swaps its content, and a navigation replaces it: an element read a moment
    # ago may be gone; the condition is then simply tried again.
    return WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    ).until(condition)


def text_of(driver: Any, css: str) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""
    except StaleElementReferenceException:  # replaced while read: not there yet
        return ""


def by_css(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def serve_site(server: LiveServer) -> str:
    site, origin = server.site, server.site.origin
    site.add("/robots.txt", f"User-agent: *\nSitemap: {origin}/sitemap_index.xml\n")
    site.add(
        "/sitemap_index.xml",
        f'<?xml version="1.0"?><sitemapindex {NS}>'
        f"<sitemap><loc>{origin}/pages.xml</loc></sitemap>"
        f"<sitemap><loc>{origin}/posts.xml</loc></sitemap></sitemapindex>",
    )
    for name, count in (("pages", 3), ("posts", 4)):
        urls = "".join(
            f"<url><loc>{origin}/{name}/{i}</loc><lastmod>2026-0{i + 1}-01</lastmod></url>"
            for i in range(count)
        )
        site.add(f"/{name}.xml", f'<?xml version="1.0"?><urlset {NS}>{urls}</urlset>')
    return origin


def test_submit_a_scan_and_watch_it_complete_then_open_the_tree_and_export_csv(
    live_server: LiveServer, browser: Any
) -> None:
    origin = serve_site(live_server)
    browser.get(live_server.url("/submit"))
    screenshot(browser, "submit")
    by_css(browser, "#domain").send_keys(origin)
    by_css(browser, "#max_urls").send_keys("1000")
    by_css(browser, "#scan-submit").click()
    wait(browser, lambda d: "/jobs/" in d.current_url)
    job_id = int(browser.current_url.rsplit("/", 1)[1])
    browser.execute_script("window.__notReloaded = true")
    wait(browser, lambda d: text_of(d, "#job-status") == "completed")
    assert browser.execute_script("return window.__notReloaded === true"), "the page reloaded"
    assert text_of(browser, "#url-count") == "7"
    done, listed = text_of(browser, "#job-files").split(" / ")
    assert done == listed and int(done) >= 3  # the 3 files, and well-known paths tried

    summary = by_css(browser, "#sitemap-tree details > summary")
    child = by_css(browser, "#sitemap-tree details ul li")
    assert not child.is_displayed()
    summary.click()
    wait(browser, lambda d: child.is_displayed())
    assert "pages.xml" in by_css(browser, "#sitemap-tree").text
    screenshot(browser, "job")

    href = by_css(browser, "#export-csv").get_attribute("href")
    csv_text = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'})"
        ".then(r => r.text().then(t => done(r.status + '\\n' + t)))",
        href,
    )
    status, _, body = csv_text.partition("\n")
    assert status == "200", csv_text
    assert f"{origin}/posts/3" in body and f"{origin}/pages/0" in body

    browser.get(live_server.url("/"))
    wait(browser, lambda d: "Workers alive" in d.page_source)
    screenshot(browser, "overview")
    browser.get(live_server.url("/jobs"))
    assert f'data-job="{job_id}"' in browser.page_source
    screenshot(browser, "jobs")

    # Phone width: the page itself never scrolls sideways (wide tables scroll in their box).
    for name, path in (("overview", "/"), ("jobs", "/jobs"), ("job", f"/jobs/{job_id}")):
        browser.set_window_size(390, 900)
        browser.get(live_server.url(path))
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone screen"
        screenshot(browser, f"phone-{name}")


def test_cancel_a_long_job_with_the_button(live_server: LiveServer, browser: Any) -> None:
    (row,) = live_server.sql(
        "INSERT INTO jobs (job_type, payload) VALUES ('noop', '{\"seconds\": 300}') RETURNING id"
    )
    job_id = row["id"]
    browser.get(live_server.url(f"/jobs/{job_id}"))
    wait(browser, lambda d: text_of(d, "#job-status") == "processing")
    by_css(browser, "#cancel-button").click()
    wait(browser, lambda d: text_of(d, "#job-status") == "cancelled")
    assert "Cancelled." in browser.page_source
    screenshot(browser, "job-cancelled")
    (row,) = live_server.sql("SELECT status FROM jobs WHERE id = $1", job_id)
    assert row["status"] == "cancelled"


def test_bulk_retry_failed_jobs_by_filter(live_server: LiveServer, browser: Any) -> None:
    payload = json.dumps({"seconds": 0})
    boom = [
        live_server.sql(
            "INSERT INTO jobs (job_type, payload, status, error, attempts, run_at) "
            "VALUES ('noop', $1, 'failed', 'boom: upstream 503', 3, now()) RETURNING id",
            payload,
        )[0]["id"]
        for _ in range(3)
    ]
    (other,) = live_server.sql(
        "INSERT INTO jobs (job_type, payload, status, error, attempts) "
        "VALUES ('noop', $1, 'failed', 'refused', 3) RETURNING id",
        payload,
    )
    browser.get(live_server.url("/jobs?status=failed&error=boom"))
    assert len(browser.find_elements("css selector", "tr[data-job]")) == 3
    screenshot(browser, "jobs-failed")
    browser.find_element("link text", "Retry all matching…").click()
    wait(browser, lambda d: text_of(d, "#bulk-count") == "3")
    screenshot(browser, "bulk-confirm")
    by_css(browser, "#bulk-confirm").click()
    wait(browser, lambda d: "3 job(s) set back to pending." in d.page_source)
    rows = live_server.sql("SELECT id, status, attempts FROM jobs ORDER BY id")
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[i]["status"] != "failed" for i in boom)
    assert by_id[other["id"]]["status"] == "failed"


def test_log_in_with_a_key_and_be_refused_another_tenants_job(
    live_server: LiveServer, browser: Any
) -> None:
    from worker.api.keys import create_key

    async def keys() -> tuple[str, str]:
        async with live_server.pool.acquire() as conn:
            mine = await create_key(conn, "tenant", "acme")
            viewer = await create_key(conn, "read_only", "acme")
            return mine.key, viewer.key

    key, read_only_key = live_server.thread.run(keys())
    ids = {}
    for tenant in ("acme", "globex"):
        (row,) = live_server.sql(
            "INSERT INTO jobs (job_type, payload, status, error) VALUES "
            "('sitemap_scan', $1, 'failed', 'no sitemap') RETURNING id",
            json.dumps({"domain": f"{tenant}.test", "tenant_id": tenant}),
        )
        ids[tenant] = row["id"]

    browser.get(live_server.url(f"/jobs/{ids['acme']}"))
    wait(browser, lambda d: "/login" in d.current_url)
    screenshot(browser, "login")
    by_css(browser, "#key").send_keys(key)
    by_css(browser, "#login-button").click()
    wait(browser, lambda d: d.current_url.endswith(f"/jobs/{ids['acme']}"))
    wait(browser, lambda d: text_of(d, "#job-status") == "failed")
    cookie = browser.get_cookie("sitemap_worker_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    browser.get(live_server.url(f"/jobs/{ids['globex']}"))
    assert "Not found" in browser.title and "was not found" in browser.page_source
    screenshot(browser, "job-other-tenant")
    browser.get(live_server.url("/jobs"))
    assert f'data-job="{ids["globex"]}"' not in browser.page_source

    # A read-only key sees the job and gets no working buttons.
    by_css(browser, ".who button").click()
    wait(browser, lambda d: "/login" in d.current_url)
    by_css(browser, "#key").send_keys(read_only_key)
    by_css(browser, "#login-button").click()
    wait(browser, lambda d: "read-only" in text_of(d, ".who"))
    browser.get(live_server.url(f"/jobs/{ids['acme']}"))
    assert not by_css(browser, "#retry-button").is_enabled()
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: 'POST', credentials: 'same-origin'})"
        ".then(r => done(r.status))",
        live_server.url(f"/jobs/{ids['acme']}/retry"),
    )
    assert status == 403
    (row,) = live_server.sql("SELECT status FROM jobs WHERE id = $1", ids["acme"])
    assert row["status"] == "failed"


def test_the_jobs_list_follows_status_changes_from_the_event_stream(
    live_server: LiveServer, browser: Any
) -> None:
    """A change made elsewhere (here: psql-style SQL) reaches an open /jobs page through
    GET /api/v3/events, without a reload and without polling."""
    (row,) = live_server.sql(
        "INSERT INTO jobs (job_type, payload, run_at) "
        "VALUES ('noop', '{}', now() + interval '1 hour') RETURNING id"
    )
    job_id = row["id"]
    browser.get(live_server.url("/jobs"))
    cell = f'tr[data-job="{job_id}"] td[data-status]'
    wait(browser, lambda d: text_of(d, cell) == "pending")
    browser.execute_script("window.__notReloaded = true")
    live_server.sql("UPDATE jobs SET status = 'cancelled' WHERE id = $1", job_id)
    wait(browser, lambda d: text_of(d, cell) == "cancelled")
    assert browser.execute_script("return window.__notReloaded === true"), "the page reloaded"


def test_submit_a_batch_and_watch_each_domain_complete(
    live_server: LiveServer, browser: Any
) -> None:
    origin = serve_site(live_server)
    port = origin.rsplit(":", 1)[1]
    browser.get(live_server.url("/submit"))
    by_css(browser, "#domains").send_keys(f"{origin}\nhttp://localhost:{port}\n")
    by_css(browser, "#batch-submit").click()
    wait(browser, lambda d: "/jobs/" in d.current_url)
    wait(browser, lambda d: text_of(d, "#job-status") == "completed")
    cells = browser.find_elements("css selector", "#children td[data-status]")
    assert [c.text for c in cells] == ["completed", "completed"]
    assert "localhost" in by_css(browser, "#children").text
    assert text_of(browser, "#url-count") == "14"
    screenshot(browser, "batch")
