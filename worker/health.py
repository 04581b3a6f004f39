"""`sitemap-worker health`: an exit status for container health checks and scripts.

0 only when the database answers a query on the jobs table within the timeout and, when a
worker's address is given, that worker's `/health` answers 200 (its listener is live and it
reaches the database itself). Otherwise 1, with one line saying what is wrong.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import asyncpg

from . import connections
from .errors import CONNECTION_ERRORS, describe
from .settings import Settings
from .sql import q


async def check_health(
    dsn: str, settings: Settings, worker_url: str | None, timeout: float
) -> tuple[bool, str]:
    """(healthy, one line for the operator)."""
    problem = await _database_problem(dsn, settings, timeout)
    if problem:
        return False, f"unhealthy: database: {problem}"
    if worker_url is None:
        return True, "ok: database reachable"
    problem = await _worker_problem(worker_url.rstrip("/") + "/health", timeout)
    if problem:
        return False, f"unhealthy: worker {worker_url}: {problem}"
    return True, f"ok: database reachable; worker {worker_url} healthy"


async def _database_problem(dsn: str, settings: Settings, timeout: float) -> str | None:
    try:
        async with asyncio.timeout(timeout):
            conn = await connections.connect(dsn, settings)
            try:
                async with connections.transaction(conn, settings, durable=False):
                    await conn.fetch(q("queue_depth"))  # also proves the schema is there
            finally:
                await conn.close()
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (asyncpg.PostgresError, *CONNECTION_ERRORS) as exc:
        return describe(exc)
    except (ValueError, OverflowError) as exc:  # asyncpg parsing a URL it cannot use
        return f"DATABASE_URL is not a valid PostgreSQL URL ({exc})"
    return None


async def _worker_problem(url: str, timeout: float) -> str | None:
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
            ) as session,
            session.get(url) as resp,
        ):
            text = await resp.text()
            if resp.status == 200:
                return None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except aiohttp.ClientError as exc:
        return f"unreachable ({exc})"
    try:
        problems = json.loads(text).get("problems") or []
    except (ValueError, AttributeError):
        problems = []
    return "; ".join(problems) or f"HTTP {resp.status}"
