"""`sitemap_scan`: discover and store one site's sitemaps and page URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..scan.fetch import Fetcher, FetchLimits
from ..scan.netguard import NetGuard
from ..scan.target import parse_target
from .sitemap.crawl import scan_site
from .types import JobType

if TYPE_CHECKING:
    from ..context import JobContext

DEFAULT_MAX_URLS = 1_000_000


class ScanPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(min_length=1, max_length=2048)
    max_urls: int = Field(default=DEFAULT_MAX_URLS, ge=1, le=100_000_000)
    tenant_id: str | int | None = None
    user_id: str | int | None = None

    @field_validator("domain")
    @classmethod
    def domain_parses(cls, value: str) -> str:
        parse_target(value)  # ValueError -> a readable validation message
        return value


def make_fetcher(ctx: JobContext) -> Fetcher:
    limits = FetchLimits.from_settings(ctx.settings)
    metrics = ctx.metrics
    return Fetcher(
        limits,
        guard=NetGuard(allow_private=ctx.settings.allow_private_networks),
        on_fetch=lambda result: metrics.observe_fetch(result.ok, result.bytes_read),
    )


async def run_scan(ctx: JobContext, payload: ScanPayload) -> dict[str, Any]:
    target = parse_target(payload.domain)  # the payload validator has refused bad ones
    fetcher = ctx.resource("fetcher", lambda: make_fetcher(ctx))
    return await scan_site(ctx, fetcher, target, payload.max_urls)


SITEMAP_SCAN = JobType("sitemap_scan", ScanPayload, run_scan)
