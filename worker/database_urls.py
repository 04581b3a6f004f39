"""Which database a command talks to: DATABASE_URL, or an embedded PostgreSQL started on demand."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from . import connections
from .settings import Settings
from .sql import q

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Urls:
    """`work` may be a transaction pooler; `direct` is a session connection to the server
    itself, for whatever needs one: LISTEN, migrations, the schema check and CLI reads."""

    work: str
    direct: str
    embedded: bool = False


@asynccontextmanager
async def open_database(settings: Settings, *, announce: bool = True) -> AsyncIterator[Urls]:
    """Yield the URLs to use. With no DATABASE_URL, start (or reuse) the embedded server and
    stop it on the way out unless other clients still use it (the last one out stops it)."""
    if settings.database_url:
        yield Urls(settings.database_url, settings.listen_url or settings.database_url)
        return
    from .embedded_pg import EmbeddedPostgres, default_data_dir

    data_dir = Path(settings.embedded_pg_dir) if settings.embedded_pg_dir else default_data_dir()
    server = EmbeddedPostgres(data_dir, tcp=False)
    dsn = await asyncio.to_thread(server.start_shared)
    if announce:
        print(f"embedded PostgreSQL: {dsn}  (data in {data_dir})", file=sys.stderr)
    try:
        yield Urls(dsn, dsn, embedded=True)
    finally:
        loop = asyncio.get_running_loop()

        def others_connected() -> bool:  # runs in the thread that holds the start lock
            return asyncio.run_coroutine_threadsafe(_others_connected(dsn, settings), loop).result()

        if not await asyncio.to_thread(server.stop_if_last, others_connected):
            log.info("embedded PostgreSQL left running: other clients are connected")


async def _others_connected(dsn: str, settings: Settings) -> bool:
    try:
        conn = await connections.connect(dsn, settings, timeout=5)
    except Exception:
        return False
    try:
        return bool(await conn.fetchval(q("other_clients")))
    finally:
        await conn.close()
