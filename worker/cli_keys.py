"""`sitemap-worker api-key create|list|revoke`: the HTTP API's keys, from the command line
(the only place a key is made; it is printed once, as the last line, and stored hashed)."""

from __future__ import annotations

import argparse

from . import connections
from .api.keys import KeyKind, KeyNotFound, create_key, list_keys, revoke_key
from .cli_errors import CliError
from .database_urls import Urls
from .settings import Settings


async def api_key(urls: Urls, settings: Settings, args: argparse.Namespace) -> int:
    conn = await connections.connect(urls.direct, settings)
    try:
        async with connections.transaction(conn, settings):
            if args.key_command == "create":
                kind: KeyKind = (
                    "admin" if args.admin else "read_only" if args.read_only else "tenant"
                )
                tenant = args.tenant.strip() if args.tenant else None
                key = await create_key(conn, kind, tenant, args.name)
                print(
                    f"created {kind} key {key.id} ({key.prefix}...)"
                    + (f" for tenant {tenant}" if tenant else "")
                    + "; it is shown only now:"
                )
                print(key.key)
                return 0
            if args.key_command == "list":
                rows = await list_keys(conn)
                if not rows:
                    print("no API keys: a server bound to loopback answers without one")
                for r in rows:
                    state = (
                        f"revoked {r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "live"
                    )
                    used = f"{r['last_used_at']:%Y-%m-%d %H:%M}" if r["last_used_at"] else "never"
                    print(
                        f"{r['id']}\t{r['prefix']}...\t{r['kind']}\t{r['tenant_id'] or '-'}\t"
                        f"{r['name'] or '-'}\tcreated {r['created_at']:%Y-%m-%d %H:%M}\t"
                        f"used {used}\t{state}"
                    )
                return 0
            try:
                key_id, prefix, now = await revoke_key(conn, args.key)
            except KeyNotFound as exc:
                raise CliError(str(exc)) from None
            print(f"key {key_id} ({prefix}...) " + ("revoked" if now else "was already revoked"))
            return 0
    finally:
        await conn.close()
