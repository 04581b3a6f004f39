"""The Domains pages in a real browser: the list links a domain to its page, which shows its
history of scans with what each added, removed and changed, and links to the jobs; the
interval form sets a re-scan interval. The rows are written with SQL, as a worker writes them.
Each page is saved as a screenshot (tests/browser/artifacts/)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import LiveServer, screenshot
from tests.browser.test_dashboard_browser import by_css, text_of, wait

pytestmark = pytest.mark.timeout(120)


def scanned_domain(server: LiveServer) -> tuple[int, int]:
    """shop.test: two completed scans, the second with changes; (first job, second job)."""
    jobs = [
        server.sql(
            "INSERT INTO jobs (job_type, payload, status, finished_at) VALUES "
            "('sitemap_scan', $1, 'completed', now()) RETURNING id",
            json.dumps({"domain": "shop.test"}),
        )[0]["id"]
        for _ in range(2)
    ]
    (row,) = server.sql(
        "INSERT INTO domains (domain, first_job_id, last_job_id, last_status, last_scanned_at,"
        " last_completed_job_id, last_completed_at, url_count, sitemap_count)"
        " VALUES ('shop.test', $1, $2, 'completed', now(), $2, now(), 1240, 3) RETURNING id",
        jobs[0],
        jobs[1],
    )
    for job_id, added, removed, changed, previous in (
        (jobs[0], 1200, 0, 0, None),
        (jobs[1], 100, 60, 20, jobs[0]),
    ):
        server.sql(
            "INSERT INTO domain_scans (job_id, domain_id, status, previous_job_id, url_count,"
            " sitemap_count, added, removed, changed, complete)"
            " VALUES ($1, $2, 'completed', $3, 1240, 3, $4, $5, $6, true)",
            job_id, row["id"], previous, added, removed, changed,
        )  # fmt: skip
    server.sql(
        "INSERT INTO url_changes (domain_id, job_id, change, loc) VALUES"
        " ($1, $2, 'added', 'https://shop.test/new-product')",
        row["id"],
        jobs[1],
    )
    return jobs[0], jobs[1]


def test_open_the_domains_page_and_see_a_domains_history(
    live_server: LiveServer, browser: Any
) -> None:
    first, second = scanned_domain(live_server)
    browser.get(live_server.url("/"))
    browser.find_element("link text", "Domains").click()
    wait(browser, lambda d: d.current_url.endswith("/domains"))
    assert "1,240" in text_of(browser, 'tr[data-domain="shop.test"]')
    screenshot(browser, "domains")

    browser.find_element("link text", "shop.test").click()
    wait(browser, lambda d: "/domains/shop.test" in d.current_url)
    rows = browser.find_elements("css selector", "#scans tbody tr")
    assert [r.get_attribute("data-job") for r in rows] == [str(second), str(first)]
    assert text_of(browser, f'#scans tr[data-job="{second}"] td.added') == "100"
    assert text_of(browser, f'#scans tr[data-job="{second}"] td.removed') == "60"
    assert text_of(browser, f'#scans tr[data-job="{second}"] td.changed') == "20"
    assert "https://shop.test/new-product" in text_of(browser, "#changes")
    assert text_of(browser, "#domain-interval") == "not watched"
    screenshot(browser, "domain")

    by_css(browser, "#interval").send_keys("6 hours")
    by_css(browser, "#interval-set").click()
    wait(browser, lambda d: "Rescan interval set." in d.page_source)
    assert text_of(browser, "#domain-interval") == "PT6H"
    (row,) = live_server.sql("SELECT extract(epoch FROM rescan_interval) AS s FROM domains")
    assert row["s"] == 6 * 3600

    by_css(browser, f'#scans tr[data-job="{second}"] a').click()
    wait(browser, lambda d: d.current_url.endswith(f"/jobs/{second}"))
    wait(browser, lambda d: text_of(d, "#job-status") == "completed")

    browser.set_window_size(390, 900)  # phone width: the page never scrolls sideways
    for path in ("/domains", "/domains/shop.test"):
        browser.get(live_server.url(path))
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone screen"
    screenshot(browser, "phone-domain")
