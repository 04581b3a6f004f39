"""`sitemap_batch`: many domains, one child `sitemap_scan` job each.

Children run in parallel on any worker; the batch holds no slot while they run. The
database completes the batch when its last child ends (sql/migrations/0003_batches.sql),
with each domain's outcome in the result; one domain's failure fails only its own child.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..context import DETACH
from ..sql import q
from .registry import JobType

if TYPE_CHECKING:
    import asyncpg

    from ..context import JobContext


class BatchPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domains: list[str] = Field(min_length=1, max_length=10_000)
    max_urls: int | None = Field(default=None, ge=1, le=100_000_000)
    tenant_id: str | int | None = None
    user_id: str | int | None = None

    @field_validator("domains")
    @classmethod
    def distinct(cls, value: list[str]) -> list[str]:
        """Each domain once, in the order given. A domain that does not parse still gets
        its child, which fails on its own with the reason."""
        return list(dict.fromkeys(d.strip() for d in value))


async def run_batch(ctx: JobContext, payload: BatchPayload) -> Any:
    extra: dict[str, Any] = {k: v for k, v in payload.model_dump().items()
                             if k != "domains" and v is not None}

    async def fan_out(conn: asyncpg.Connection) -> None:
        if not await conn.fetchval(q("batch_children"), ctx.job.id):  # a retry adds none
            children = [json.dumps({"domain": d, **extra}) for d in payload.domains]
            await conn.fetch(q("enqueue_many"), "sitemap_scan", children, ctx.job.priority,
                             None, ctx.job.id)

    await ctx.run_phase(fan_out, progress=0)
    return DETACH


SITEMAP_BATCH = JobType("sitemap_batch", BatchPayload, run_batch)
