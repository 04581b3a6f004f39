"""worker.scan is a library: importing it pulls in no database driver, no worker settings
and no job context, and its fetch defaults are the worker's documented ones."""

from __future__ import annotations

import subprocess
import sys

from worker.scan.fetch import FetchLimits
from worker.settings import Settings

WORKER_ONLY = (
    "asyncpg",
    "worker.context",
    "worker.settings",
    "worker.connections",
    "worker.errors",
    "pydantic",
)


def test_importing_the_scanner_loads_nothing_of_the_worker() -> None:
    code = (
        "import sys, pkgutil, importlib, worker.scan\n"
        "for m in pkgutil.iter_modules(worker.scan.__path__): importlib.import_module('worker.scan.' + m.name)\n"
        f"print(','.join(sorted(m for m in {WORKER_ONLY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"worker.scan imports {out.stdout.strip()}"


def test_fetch_defaults_are_the_settings_defaults() -> None:
    assert FetchLimits() == FetchLimits.from_settings(Settings())


def test_limits_follow_the_settings_given() -> None:
    limits = FetchLimits.from_settings(
        Settings(
            fetch_total_timeout="5s", fetch_per_host_concurrency=2, allow_private_networks=True
        )
    )
    assert (limits.total_timeout, limits.per_host_concurrency, limits.allow_private_networks) == (
        5.0,
        2,
        True,
    )
