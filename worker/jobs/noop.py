"""`noop`: completes at once, or holds for `seconds`; for health checks, tests and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .types import JobType

if TYPE_CHECKING:
    from ..context import JobContext


class NoopPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    seconds: float = Field(default=0, ge=0, le=86_400, allow_inf_nan=False)


async def run_noop(ctx: JobContext, payload: NoopPayload) -> dict[str, Any]:
    if payload.seconds:
        await ctx.sleep(payload.seconds)
    return {"seconds": payload.seconds}


NOOP = JobType("noop", NoopPayload, run_noop)
