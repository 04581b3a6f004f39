"""`sitemap_batch`: many domains, one child `sitemap_scan` job each.

Children run in parallel on any worker; the batch holds no slot while they run. The
database counts the children as they end and completes the batch when the last one has
(sql/migrations/0008_batch_counters.sql), with each domain's outcome in the result; one
domain's failure fails only its own child.

Domains are told apart the way the scan sees them (`HTTP://x`, `http://x` and `http://x/`
are one site). An entry that is not a usable domain (not a string, a bad scheme) becomes
a child that is already failed with the reason: it shows in the result and fails
nothing else. A retried batch re-runs its failed and cancelled children (the database
resets them when the batch goes back to pending) and adds none.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..context import DETACH
from ..scan.target import parse_target
from ..sql import q
from .types import JobType

if TYPE_CHECKING:
    import asyncpg

    from ..context import JobContext


class BatchPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Any JSON value per entry: a bad one fails its own entry, not the batch.
    domains: list[Any] = Field(min_length=1, max_length=10_000)
    max_urls: int | None = Field(default=None, ge=1, le=100_000_000)
    tenant_id: str | int | None = None
    user_id: str | int | None = None


def plan_children(domains: list[Any], extra: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(child payload as JSON, error or None) per distinct site, in the order given.
    Two entries are one site when the scan would try the same origins; the first
    spelling is kept. An invalid entry carries the reason the scan would have given."""
    seen: set[object] = set()
    children: list[tuple[str, str | None]] = []
    for value in domains:
        try:
            target = parse_target(value)
        except ValueError as exc:
            shown = json.dumps(value)
            key: object = ("invalid", shown)
            error: str | None = (
                f"invalid payload for sitemap_scan: domain: {exc} (got {shown[:80]})"
            )
            domain = value
        else:
            key, error, domain = target.origins, None, value.strip()
        if key in seen:
            continue
        seen.add(key)
        children.append((json.dumps({"domain": domain, **extra}), error))
    return children


async def run_batch(ctx: JobContext, payload: BatchPayload) -> Any:
    extra: dict[str, Any] = {
        k: v for k, v in payload.model_dump().items() if k != "domains" and v is not None
    }

    async def fan_out(conn: asyncpg.Connection) -> str | None:
        if not await conn.fetchval(q("batch_children"), ctx.job.id):  # a retry adds none
            children = plan_children(payload.domains, extra)
            await conn.execute(
                q("enqueue_batch_children"),
                ctx.job.id,
                [p for p, _ in children],
                [e for _, e in children],
                ctx.job.priority,
            )
        # Nothing left to run (every entry invalid, or a retry with nothing to re-run):
        # the batch completes now, with its result.
        result: str | None = await conn.fetchval(q("batch_result_if_ended"), ctx.job.id)
        return result

    result = await ctx.run_phase(fan_out)
    return DETACH if result is None else json.loads(result)


SITEMAP_BATCH = JobType("sitemap_batch", BatchPayload, run_batch)
