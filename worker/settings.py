"""All configuration in one typed object, read from the environment once at start-up.

Every value is checked here, so a mistake in the environment stops the program at start-up
with one line naming the variable (see `describe_errors`), not later in the middle of work."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
DURATION_HINT = "use seconds (2.5) or a unit (250ms, 30s, 5m, 1h, 1d)"
# Far beyond any sensible knob, and small enough for every sum the worker makes with it
# (now() + lease in SQL, asyncio timers).
MAX_DURATION = timedelta(days=365)
# PostgreSQL's statement_timeout is an int of milliseconds (at most about 24.8 days).
MAX_STATEMENT_TIMEOUT = timedelta(days=24)
CONCURRENCY_MAX = 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_duration(value: Any) -> Any:
    """`2.5` (seconds), `250ms`, `30s`, `5m`, `1h`, `30d`; anything else goes to pydantic as is
    (timedelta objects, ISO 8601 like `PT30S`). A number too large for a timedelta is a
    ValueError, like any other bad value."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if isinstance(value, str) and (m := _DURATION.match(value)):
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])
    except (OverflowError, ValueError):  # ValueError: nan
        raise ValueError(f"out of range (at most {format_duration(MAX_DURATION)})") from None
    return value


def format_duration(value: timedelta) -> str:
    """The shortest way to write it back: `365d`, `30s`, `250ms`."""
    ms = value / timedelta(milliseconds=1)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size:.0f}{unit}"
    return f"{ms:g}ms"


def _within(low: timedelta, high: timedelta, *, low_included: bool) -> Any:
    def check(value: timedelta) -> timedelta:
        if value < low or (value == low and not low_included):
            raise ValueError(
                f"must be {'at least' if low_included else 'more than'} "
                f"{format_duration(low) if low else 0}"
            )
        if value > high:
            raise ValueError(f"must be at most {format_duration(high)}")
        return value

    return AfterValidator(check)


def _parse(value: Any) -> Any:
    if (
        isinstance(value, str)
        and not _DURATION.match(value)
        and not value.strip().startswith(("P", "-P"))
    ):
        raise ValueError(f"not a duration: {DURATION_HINT}")
    return parse_duration(value)


# A wait, a timeout or an interval: zero would mean "never" or "busy loop", so it is refused.
Duration = Annotated[
    timedelta, BeforeValidator(_parse), _within(timedelta(0), MAX_DURATION, low_included=False)
]
# A pause that may be zero (no pause).
Pause = Annotated[
    timedelta, BeforeValidator(_parse), _within(timedelta(0), MAX_DURATION, low_included=True)
]


def env_name(field: str) -> str:
    """The environment variable that sets a field (`lease` -> `WORKER_LEASE`)."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"WORKER_{field.upper()}"


def describe_errors(exc: ValidationError) -> str:
    """One line for all of a Settings ValidationError: `WORKER_LEASE='abc': not a duration ...`."""
    parts = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = env_name(field) if field else "settings"
        message = _message(error)
        shown = error.get("input")
        if not field:  # a check across fields names its variables itself
            parts.append(message)
        elif isinstance(shown, str) and "url" not in field:  # URLs may hold passwords
            parts.append(f"{name}={shown!r}: {message}")
        else:
            parts.append(f"{name}: {message}")
    return "; ".join(parts)


def _message(error: Any) -> str:
    """pydantic's words, shortened where they have a plainer form."""
    ctx = error.get("ctx") or {}
    if error.get("type") == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if error.get("type") == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if error.get("type") == "int_parsing":
        return "not a whole number"
    if error.get("type") == "bool_parsing":
        return "not a yes/no value (true, false, 1, 0)"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


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
    concurrency: int = Field(default=10, ge=1, le=CONCURRENCY_MAX, description="Jobs run at once.")
    pool_size: int = Field(
        default=0,
        ge=0,
        le=200,
        description="Max pooled connections; 0 means concurrency + 3 capped at 20.",
    )
    poll_interval: Duration = Field(
        default=timedelta(seconds=1),
        description="Fallback claim poll when no wake-up arrives (jittered by 10%).",
    )
    trailing_poll: Pause = Field(
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
        description="How often held jobs' leases are renewed; also how fast a "
        "cancellation from SQL is noticed.",
    )
    shutdown_grace: Pause = Field(
        default=timedelta(seconds=10),
        description="On SIGTERM/SIGINT, the time the worker has to exit: running jobs may "
        "finish during all of it but the last second (or quarter, if shorter), then what is "
        "left is handed back to pending.",
    )
    retry_base: Duration = Field(
        default=timedelta(seconds=2), description="First retry delay; doubles per attempt."
    )
    retry_cap: Duration = Field(default=timedelta(minutes=10), description="Longest retry delay.")
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
    statement_timeout: Annotated[
        timedelta,
        BeforeValidator(_parse),
        _within(timedelta(0), MAX_STATEMENT_TIMEOUT, low_included=False),
    ] = Field(
        default=timedelta(seconds=30),
        description="Cap on any one worker statement (SET LOCAL in each transaction).",
    )
    fetch_connect_timeout: Duration = Field(
        default=timedelta(seconds=10), description="Scanner: TCP connect timeout per address."
    )
    fetch_read_timeout: Duration = Field(
        default=timedelta(seconds=20), description="Scanner: longest silence while a body arrives."
    )
    fetch_total_timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="Scanner: one fetch attempt, all redirect hops and the whole body; a "
        "slow-drip server cannot extend it. Time spent waiting for storage to catch up is "
        "not counted.",
    )
    fetch_user_agent: str = Field(
        default="sitemap-worker/0.1 (+https://github.com/sitemap-worker)",
        description="Scanner: User-Agent header.",
    )
    fetch_per_host_concurrency: int = Field(
        default=4, ge=1, le=64, description="Scanner: requests in flight per host."
    )
    fetch_per_host_delay: Pause = Field(
        default=timedelta(0), description="Scanner: minimum gap between requests to one host."
    )
    fetch_max_bytes: int = Field(
        default=51 * 1024 * 1024,
        ge=1024,
        description="Scanner: bytes downloaded per file (the spec's 50 MB plus a margin); "
        "an endless response stops here.",
    )
    fetch_max_redirects: int = Field(
        default=10, ge=0, le=50, description="Scanner: redirects followed."
    )
    fetch_max_attempts: int = Field(
        default=3, ge=1, le=10, description="Scanner: tries per file on timeouts, 429 and 5xx."
    )
    embedded_pg_dir: str | None = Field(
        default=None,
        description="Data directory of the embedded PostgreSQL (default: "
        "/var/lib/sitemap-worker/pg18 as root, else ~/.local/share/sitemap-worker/pg18).",
    )
    log_level: str = Field(default="INFO", description="Python log level: " + ", ".join(LOG_LEVELS))
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: readable lines; `json`: one JSON object per line (ts, level, "
        "logger, message, job_id on every line about a job).",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve Prometheus `/metrics` and a `/health` check on this port; unset: "
        "no HTTP endpoint.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the metrics endpoint binds (`0.0.0.0` in a container).",
    )

    api_max_batch_domains: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Most domains one POST /api/v3/sitemap/batch may carry (more: 422); "
        "at most the batch job's own limit, 10,000.",
    )
    api_session_secret: str | None = Field(
        default=None,
        min_length=32,
        description="Signs the dashboard's session cookies; unset: a random secret per "
        "server start (sessions then end when the server restarts). Set one shared value "
        "when several `serve` processes sit behind one address.",
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"not a log level (use one of {', '.join(LOG_LEVELS)})")
        return level

    @field_validator("metrics_host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        """What the resolver itself would refuse (an empty name, a label over 63 bytes), said
        now rather than as a traceback when the endpoint starts."""
        try:
            ok = bool(value.strip()) and bool(value.encode("idna"))
        except UnicodeError:
            ok = False
        if not ok:
            raise ValueError("not a host name or address")
        return value

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Settings:
        """A lease that expires between two renewals would hand every running job to the
        next claim while it still runs."""
        if self.heartbeat_interval >= self.lease:
            raise ValueError(
                f"WORKER_HEARTBEAT_INTERVAL ({format_duration(self.heartbeat_interval)}) must be "
                f"shorter than WORKER_LEASE ({format_duration(self.lease)}), or leases expire "
                "between renewals"
            )
        return self

    def pool_size_for(self, concurrency: int | None = None) -> int:
        """Jobs hold a connection only inside a phase, so a few more than concurrency is plenty."""
        return self.pool_size or min((concurrency or self.concurrency) + 3, 20)

    @property
    def effective_pool_size(self) -> int:
        return self.pool_size_for()

    @property
    def listen_url(self) -> str | None:
        return self.listen_database_url or self.database_url
