"""`sitemap-worker domains`: list and watch against a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from worker.cli_args import build_parser
from worker.cli_domains import domains


async def run(urls, settings, capsys, *argv: str) -> str:
    code = await domains(urls, settings, build_parser().parse_args(["domains", *argv]))
    assert code == 0
    return capsys.readouterr().out


async def test_watch_creates_schedules_and_stops(urls, settings, direct, capsys):
    assert "no domains yet" in await run(urls, settings, capsys)
    out = await run(urls, settings, capsys, "watch", "HTTPS://Example.COM/", "--every", "1d")
    assert out.startswith("example.com: re-scanned every 1 day, next at ")
    row = await direct.fetchrow("SELECT * FROM domains")
    assert row["domain"] == "example.com" and row["tenant_id"] is None
    assert row["rescan_interval"] == timedelta(days=1)
    assert row["next_scan_at"] is not None
    await run(urls, settings, capsys, "watch", "example.com", "--every", "12h", "--tenant", "acme")
    assert await direct.fetchval("SELECT count(*) FROM domains") == 2  # one per tenant
    listing = await run(urls, settings, capsys, "list", "--tenant", "acme")
    assert "example.com\tacme\t" in listing and "12:00:00" in listing
    assert listing.count("\n") == 2  # header and acme's one domain
    out = await run(urls, settings, capsys, "watch", "example.com", "--never")
    assert out == "example.com: no recurring scans\n"
    row = await direct.fetchrow("SELECT * FROM domains WHERE tenant_id IS NULL")
    assert row["rescan_interval"] is None and row["next_scan_at"] is None
    assert "never" in await run(urls, settings, capsys)
