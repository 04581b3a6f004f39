"""Real `sitemap-worker` processes for acceptance tests, with their log lines as events."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

READY = re.compile(r"ready: ")


REPO_ROOT = str(Path(__file__).resolve().parents[2])


def worker_command() -> list[str]:
    """This checkout's worker, run as a module: the code under test, never a stale
    installed copy (an installed console script may come from another checkout). The
    console script itself is checked by the quick-start and container tests."""
    return [sys.executable, "-m", "worker"]


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """os.environ plus `env`, with this checkout first on the import path."""
    path = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **env}


class WorkerProcess:
    """A child `sitemap-worker` whose stderr is read line by line as it arrives."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, env: Mapping[str, str], *args: str) -> WorkerProcess:
        full_env = process_env({"WORKER_LOG_LEVEL": "INFO", **env})
        proc = await asyncio.create_subprocess_exec(
            *worker_command(),
            *(args or ("run",)),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._new_line.set()
        self._new_line.set()

    async def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float = 15.0) -> str:
        """The first log line (already seen or still to come) matching `pattern`."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self.lines)
                if self._reader.done():
                    raise AssertionError(f"worker exited before {regex.pattern!r}:\n" + self.log())
                self._new_line.clear()
                await self._new_line.wait()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        await self.wait_for_line(READY, timeout)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float | None = 20.0) -> int:
        """Its exit status, once it has exited and its stderr is read (None: no time limit)."""
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader
        return code

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it will not go."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await self.wait(15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if not self._reader.done():
            self._reader.cancel()

    def log(self) -> str:
        return "\n".join(self.lines)


def find_psql() -> str:
    """The real psql: next to the server binaries, else on PATH."""
    from worker.embedded_pg import find_bindir

    candidate = find_bindir() / "psql"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("psql")
    if not found:
        raise RuntimeError("psql not found")
    return found


async def psql(dsn: str, sql: str) -> str:
    """Run SQL with the real psql binary, as a user would; returns its output."""
    proc = await asyncio.create_subprocess_exec(
        find_psql(),
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        dsn,
        "-c",
        sql,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"psql failed ({proc.returncode}): {err.decode()}")
    return out.decode().strip()
