"""`sitemap-worker domains`: the domains the scans keep, and how often each is re-scanned.

    sitemap-worker domains [list] [--tenant T] [--limit N]
    sitemap-worker domains watch DOMAIN --every '1 day' [--tenant T]
    sitemap-worker domains watch DOMAIN --never [--tenant T]

`watch` creates the domain's row if no scan has made one yet; the workers then enqueue its
scans themselves (worker/domains/schedule.py). The same as
`UPDATE domains SET rescan_interval = '1 day' WHERE domain = 'example.com'` from psql.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from typing import Any

import asyncpg

from . import connections
from .cli_args import integer
from .database_urls import Urls
from .scan.target import domain_key, parse_target
from .settings import Settings
from .sql import q

_UNITS = {
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
}
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$")
SHORTEST = timedelta(minutes=1)  # the domains table's own bound
LONGEST = timedelta(days=3650)


def rescan_interval(value: str) -> timedelta:
    """`30m`, `12h`, `1d`, `2w`, `1 day`, `6 hours`, `90 minutes`: at least one minute."""
    m = _INTERVAL.match(value.lower())
    unit = m.group(2) if m else ""
    if m is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"not an interval: {value!r} (write e.g. 30m, 12h, 1d, '1 day', '6 hours')"
        )
    every = timedelta(seconds=float(m.group(1)) * _UNITS[unit])
    if not SHORTEST <= every <= LONGEST:
        raise argparse.ArgumentTypeError(f"must be from 1 minute to 3650 days, not {value!r}")
    return every


def domain_argument(value: str) -> str:
    try:
        parse_target(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_domains_parser(sub: argparse._SubParsersAction[Any]) -> None:
    domains = sub.add_parser(
        "domains",
        help="list the domains scans keep; set how often one is re-scanned",
        description="Without an action: list the domains (last scan, counts, what changed, "
        "next scan). `watch DOMAIN --every 1d` makes the workers re-scan it every day "
        "(jittered, never while a scan of it runs); `--never` stops that.",
    )
    actions = domains.add_subparsers(dest="domains_command", metavar="ACTION")
    listing = actions.add_parser("list", help="the domains, by name (the default action)")
    listing.add_argument(
        "--limit", type=integer(1, 100_000, "a count"), default=1000, help="at most this many"
    )
    listing.add_argument("--tenant", help="only this tenant's domains")
    watch = actions.add_parser("watch", help="set or clear a domain's re-scan interval")
    watch.add_argument("domain", type=domain_argument, metavar="DOMAIN")
    every = watch.add_mutually_exclusive_group(required=True)
    every.add_argument(
        "--every", type=rescan_interval, help="re-scan this often: 30m, 12h, 1d, '1 day'"
    )
    every.add_argument("--never", action="store_true", help="no more recurring scans")
    watch.add_argument("--tenant", help="the domain of this tenant's scans")


async def domains(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    conn = await connections.connect(urls.direct, settings)
    try:
        async with connections.transaction(conn, settings):
            if args.domains_command == "watch":
                return await _watch(conn, args)
            rows = await conn.fetch(
                q("list_domains"), getattr(args, "tenant", None), getattr(args, "limit", 1000)
            )
    finally:
        await conn.close()
    if not rows:
        print("no domains yet: each sitemap_scan adds its own")
        return 0
    print("domain\ttenant\tlast scan\tstatus\turls\tadded/removed/changed\tevery\tnext scan")
    for r in rows:
        changes = (
            "-"
            if r["added"] is None
            else f"+{r['added']}/-{r['removed']}/~{r['changed']}"
            + ("" if r["complete"] else " (incomplete)")
        )
        print(
            f"{r['domain']}\t{r['tenant_id'] or '-'}\t"
            f"{_when(r['last_scanned_at'])}\t{r['last_status'] or '-'}\t{r['url_count']:,}\t"
            f"{changes}\t{r['rescan_interval'] or 'never'}\t{_when(r['next_scan_at'])}"
        )
    return 0


async def _watch(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    name = domain_key(args.domain)
    payload = {"domain": args.domain, **({"tenant_id": args.tenant} if args.tenant else {})}
    row = await conn.fetchrow(
        q("set_rescan_interval"),
        args.tenant,
        name,
        None if args.never else args.every,
        json.dumps(payload),
    )
    if row["rescan_interval"] is None:
        print(f"{row['domain']}: no recurring scans")
    else:
        print(
            f"{row['domain']}: re-scanned every {row['rescan_interval']}, "
            f"next at {_when(row['next_scan_at'])}"
        )
    return 0


def _when(value: object) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"
