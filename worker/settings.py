"""All configuration in one typed object, read from the environment once at start-up."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> Any:
    """`2.5` (seconds), `250ms`, `30s`, `5m`, `1h`, `30d`; anything else goes to pydantic as is
    (timedelta objects, ISO 8601 like `PT30S`)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Settings(BaseSettings):
    """Every knob the worker has; README.md lists them with these defaults. Durations
    accept seconds (`2.5`) or a unit (`250ms`, `30s`, `5m`, `1h`)."""

    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "WORKER_DATABASE_URL"),
        description="Where all job work goes; may point at PgBouncer/Supavisor in transaction "
        "mode. Unset: an embedded PostgreSQL is started on demand.",
    )
    listen_database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LISTEN_DATABASE_URL", "WORKER_LISTEN_DATABASE_URL"),
        description="Direct (session) connection used only for LISTEN and migrations; "
        "defaults to DATABASE_URL.",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Let the scanner fetch loopback, private, link-local and metadata "
        "addresses (SSRF guard off): tests and intranets only.",
    )
    concurrency: int = Field(default=10, ge=1, le=1000, description="Jobs run at once.")
    pool_size: int = Field(
        default=0, ge=0, le=200,
        description="Max pooled connections; 0 means concurrency + 3 capped at 20.",
    )
    poll_interval: Duration = Field(
        default=timedelta(seconds=1),
        description="Fallback claim poll when no wake-up arrives (jittered by 10%).",
    )
    trailing_poll: Duration = Field(
        default=timedelta(milliseconds=20),
        description="Extra claim this long after a wake-up, for jobs whose NOTIFY the "
        "trigger's throttle (5 ms) suppressed.",
    )
    lease: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a claimed job stays owned without a heartbeat; an expired "
        "lease is re-claimed by any worker.",
    )
    heartbeat_interval: Duration = Field(
        default=timedelta(seconds=2),
        description="How often running jobs' leases are renewed; also how fast a "
        "cancellation from SQL is noticed.",
    )
    shutdown_grace: Duration = Field(
        default=timedelta(seconds=10),
        description="On SIGTERM/SIGINT, the time the worker has to exit: running jobs may "
        "finish during all of it but the last second (or quarter, if shorter), then what is "
        "left is handed back to pending.",
    )
    retry_base: Duration = Field(
        default=timedelta(seconds=2), description="First retry delay; doubles per attempt."
    )
    retry_cap: Duration = Field(
        default=timedelta(minutes=10), description="Longest retry delay."
    )
    listener_probe_interval: Duration = Field(
        default=timedelta(seconds=10),
        description="Idle time after which the listener proves its connection with a "
        "NOTIFY round trip (catches half-open sockets).",
    )
    listener_probe_timeout: Duration = Field(
        default=timedelta(seconds=5), description="How long a probe may take."
    )
    listener_max_backoff: Duration = Field(
        default=timedelta(seconds=15), description="Longest pause between reconnects."
    )
    statement_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="Cap on any one worker statement (SET LOCAL in each transaction).",
    )
    fetch_connect_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Scanner: TCP connect timeout per address.")
    fetch_read_timeout: Duration = Field(
        default=timedelta(seconds=20), description="Scanner: longest silence while a body arrives.")
    fetch_total_timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="Scanner: one fetch attempt, all redirect hops and the whole body; a "
        "slow-drip server cannot extend it.")
    fetch_user_agent: str = Field(
        default="sitemap-worker/0.1 (+https://github.com/sitemap-worker)",
        description="Scanner: User-Agent header.")
    fetch_per_host_concurrency: int = Field(
        default=4, ge=1, le=64, description="Scanner: requests in flight per host.")
    fetch_per_host_delay: Duration = Field(
        default=timedelta(0), description="Scanner: minimum gap between requests to one host.")
    fetch_max_bytes: int = Field(
        default=51 * 1024 * 1024, ge=1024,
        description="Scanner: bytes downloaded per file (the spec's 50 MB plus a margin); "
        "an endless response stops here.")
    fetch_max_redirects: int = Field(default=10, ge=0, le=50, description="Scanner: redirects followed.")
    fetch_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Scanner: tries per file on timeouts, 429 and 5xx.")
    embedded_pg_dir: str | None = Field(
        default=None,
        description="Data directory of the embedded PostgreSQL (default: "
        "/var/lib/sitemap-worker/pg18 as root, else ~/.local/share/sitemap-worker/pg18).",
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: readable lines; `json`: one JSON object per line (ts, level, "
        "logger, message, job_id on every line about a job).")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Serve Prometheus `/metrics` and a `/health` check on this port; unset: "
        "no HTTP endpoint.")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the metrics endpoint binds (`0.0.0.0` in a container).")

    def pool_size_for(self, concurrency: int | None = None) -> int:
        """Jobs hold a connection only inside a phase, so a few more than concurrency is plenty."""
        return self.pool_size or min((concurrency or self.concurrency) + 3, 20)

    @property
    def effective_pool_size(self) -> int:
        return self.pool_size_for()

    @property
    def listen_url(self) -> str | None:
        return self.listen_database_url or self.database_url
