"""A real PgBouncer (Debian's 1.18) in transaction mode in front of the test server.

Why real: transaction pooling is what breaks named prepared statements and LISTEN, and only
the real pooler shows it. No pip package ships the binary, so it comes from apt or the system.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from worker.embedded_pg import (
    ensure_traversable,
    free_tcp_port,
    make_dirs,
    service_account,
)

_READY_TIMEOUT_S = 10.0


class PgBouncerError(RuntimeError):
    """PgBouncer missing, misconfigured or not accepting connections."""


MISSING = "pgbouncer is not installed (apt-get install pgbouncer): the pooled tier was skipped"
REQUIRE_ENV = "SITEMAP_WORKER_REQUIRE_PGBOUNCER"


def find_pgbouncer() -> Path | None:
    """$PGBOUNCER_BIN when set (a path that is not executable means "none"), else PATH,
    then /usr/sbin (off a normal user's PATH on Debian)."""
    chosen = os.environ.get("PGBOUNCER_BIN")
    candidates = (chosen,) if chosen else (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer")
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def pgbouncer_required() -> bool:
    """CI must always run the pooled tier: there a missing PgBouncer fails instead of skipping."""
    return bool(os.environ.get(REQUIRE_ENV) or os.environ.get("CI"))


def require_pgbouncer() -> None:
    """Skip the calling test when PgBouncer is absent (fail where it is required)."""
    import pytest  # only tests call this; the module is also imported by benchmarks

    if find_pgbouncer() is None:
        if pgbouncer_required():
            pytest.fail(f"{MISSING}, and {REQUIRE_ENV} or CI requires it")
        pytest.skip(MISSING)


class PgBouncer:
    """Foreground pgbouncer subprocess on an ephemeral 127.0.0.1 port."""

    def __init__(self, workdir: Path, pg_port: int, *, pool_size: int = 4) -> None:
        self.workdir = Path(workdir).resolve()
        self.pg_port = pg_port
        self.pool_size = pool_size
        self._port = free_tcp_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_file(self) -> Path:
        return self.workdir / "pgbouncer.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self._port}/{dbname}"

    def start(self) -> str:
        """Launch and wait until the port accepts TCP; returns the DSN of database postgres."""
        binary = find_pgbouncer()
        if binary is None:
            raise PgBouncerError(
                "pgbouncer not found: apt-get install pgbouncer, or set PGBOUNCER_BIN"
            )
        account = service_account()  # it refuses to run as root, like PostgreSQL
        ini = self._write_config(
            account.pw_uid if account else None, account.pw_gid if account else None
        )
        ensure_traversable(ini, account)
        cmd = [str(binary), *(["-u", account.pw_name] if account else []), str(ini)]
        self._output = (self.workdir / "pgbouncer.out").open("ab")
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT, cwd="/"
        )
        self._wait_ready()
        return self.dsn()

    def stop(self) -> None:
        """SIGINT = safe shutdown (waits for in-flight transactions); escalate if it hangs."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait_s in (
                (signal.SIGINT, 10.0),
                (signal.SIGTERM, 5.0),
                (signal.SIGKILL, 5.0),
            ):
                proc.send_signal(sig)
                try:
                    proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._output is not None:
            self._output.close()
            self._output = None

    def kill(self) -> None:
        """SIGKILL: every client and server connection drops at once, as in a crash."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if self._output is not None:
            self._output.close()
            self._output = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop (safe shutdown, or SIGKILL with `kill`) and start again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def _write_config(self, uid: int | None, gid: int | None) -> Path:
        """The ini from the research notes; trust auth still needs the user in auth_file."""
        make_dirs(self.workdir)
        userlist = self.workdir / "userlist.txt"
        userlist.write_text('"postgres" ""\n')
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.pg_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self._port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {userlist}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n"
            # pgjdbc sends it; anything else unknown must fail loudly, not be silently dropped
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.log_file}\n"
        )
        self.log_file.touch()
        if uid is not None and gid is not None:
            for path in (self.workdir, userlist, ini, self.log_file):
                os.chown(path, uid, gid)
        return ini

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PgBouncerError(
                    f"pgbouncer exited with {self._proc.returncode}\n{self._tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise PgBouncerError(
            f"pgbouncer not accepting on port {self._port} after {_READY_TIMEOUT_S}s\n{self._tail()}"
        )

    def _tail(self, lines: int = 20) -> str:
        out = []
        for path in (self.workdir / "pgbouncer.out", self.log_file):
            if path.exists():
                out.append(
                    f"--- {path} ---\n"
                    + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                )
        return "\n".join(out)
