"""Prometheus metrics of one worker process, on a registry of its own.

Counters are bumped where things happen (the outcome writer, the claim, the fetcher); values
that already live somewhere (running jobs, the listener's state) are read at scrape time, so
the hot paths carry no extra bookkeeping. Queue depth is read from the database at scrape
time too: it is the same for every worker, so dashboards take max() over replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "sitemap_worker"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Pickup is sub-millisecond when idle and seconds under a backlog; jobs take ms to minutes.
PICKUP_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LISTENER_STATES = ("connecting", "listening", "reconnecting", "failing", "stopped")


class Metrics:
    """Everything one worker exports. Outcome kinds map to counters as the writer reports
    them, i.e. only once the database has accepted the status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.claimed = Counter(
            f"{PREFIX}_jobs_claimed", "Jobs this worker claimed.", ["job_type"], registry=r
        )
        self.completed = Counter(
            f"{PREFIX}_jobs_completed", "Jobs this worker completed.", ["job_type"], registry=r
        )
        self.failed = Counter(
            f"{PREFIX}_jobs_failed",
            "Jobs that ended failed (no retry left, or a permanent error).",
            ["job_type"],
            registry=r,
        )
        self.retried = Counter(
            f"{PREFIX}_jobs_retried",
            "Failed attempts put back to pending for a later retry.",
            ["job_type"],
            registry=r,
        )
        self.released = Counter(
            f"{PREFIX}_jobs_released",
            "Jobs handed back to pending at shutdown, attempt not counted.",
            ["job_type"],
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_job_duration_seconds",
            "Time a job ran in this worker, by how it ended.",
            ["job_type", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.pickup = Histogram(
            f"{PREFIX}_pickup_latency_seconds",
            "From a job becoming runnable to its claim, by the database's clock.",
            buckets=PICKUP_BUCKETS,
            registry=r,
        )
        self.fetches = Counter(
            f"{PREFIX}_fetches",
            "Sitemap and robots.txt fetches, by outcome (ok: a 2xx body; error: anything else).",
            ["outcome"],
            registry=r,
        )
        self.fetched_bytes = Counter(
            f"{PREFIX}_fetched_bytes",
            "Body bytes downloaded by the scanner (as sent, before gunzip).",
            registry=r,
        )
        self.urls_stored = Counter(
            f"{PREFIX}_urls_stored", "Page URLs stored (new for their job).", registry=r
        )
        self._live = _LiveValues()
        r.register(self._live)

    def watch(
        self,
        *,
        running: Callable[[], int] | None = None,
        listener_state: Callable[[], str] | None = None,
        listener_reconnects: Callable[[], int] | None = None,
    ) -> None:
        """Values read at scrape time from the objects that own them."""
        self._live.running = running or self._live.running
        self._live.listener_state = listener_state or self._live.listener_state
        self._live.listener_reconnects = listener_reconnects or self._live.listener_reconnects

    def set_queue_depth(self, depth: Mapping[str, int]) -> None:
        self._live.queue_depth = dict(depth)

    def observe_fetch(self, ok: bool, body_bytes: int) -> None:
        self.fetches.labels("ok" if ok else "error").inc()
        if body_bytes:
            self.fetched_bytes.inc(body_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveValues(Collector):
    """Gauges whose truth lives elsewhere; collected, never stored."""

    def __init__(self) -> None:
        self.running: Callable[[], int] = lambda: 0
        self.listener_state: Callable[[], str] = lambda: "stopped"
        self.listener_reconnects: Callable[[], int] = lambda: 0
        self.queue_depth: dict[str, int] = {}

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            f"{PREFIX}_jobs_running", "Jobs running in this worker now.", value=self.running()
        )
        state = self.listener_state()
        up = GaugeMetricFamily(
            f"{PREFIX}_listener_up",
            "1 while the LISTEN connection is live (or not needed: burst mode).",
            value=1 if state in ("listening", "none") else 0,
        )
        yield up
        states = GaugeMetricFamily(
            f"{PREFIX}_listener_state",
            "The listener's state (1 for the current one).",
            labels=["state"],
        )
        for name in LISTENER_STATES:
            states.add_metric([name], 1 if name == state else 0)
        yield states
        yield CounterMetricFamily(
            f"{PREFIX}_listener_reconnects",
            "Times the LISTEN connection was re-established after a loss.",
            value=self.listener_reconnects(),
        )
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_jobs",
            "Jobs in the table by state, read at "
            "scrape time: pending (runnable now), scheduled (pending, "
            "run_at in the future), processing.",
            labels=["status"],
        )
        for status in ("pending", "scheduled", "processing"):
            if status in self.queue_depth:
                depth.add_metric([status], self.queue_depth[status])
        yield depth
