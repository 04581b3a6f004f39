"""docker/: the compose file, the Dockerfile and the PgBouncer config, read offline (no Docker
engine needed), and the exact commands their containers run, run here as real processes
against a real PostgreSQL and PgBouncer. Every command comes from the files themselves, so
the tests break when the files drift."""

from __future__ import annotations

import asyncio
import configparser
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from tests.conftest import admin_dsn, scratch_database
from tests.support.pgbouncer import PgBouncer, find_pgbouncer, require_pgbouncer
from tests.support.processes import WorkerProcess, find_psql
from tests.support.waits import StatusWatcher
from worker.cli import build_parser
from worker.embedded_pg import (
    EmbeddedPostgres,
    free_tcp_port,
    make_dirs,
    service_account,
)
from worker.settings import Settings, parse_duration

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
PGBOUNCER_INI = DOCKER / "pgbouncer" / "pgbouncer.ini"
DOCKERIGNORE = ROOT / ".dockerignore"

_counter = itertools.count(1)


# ---- compose: YAML and its ${VAR} interpolation ------------------------------------------


def load_compose() -> Any:
    """docker/compose.yaml as Python objects (YAML anchors and merge keys applied)."""
    try:
        import yaml
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("pyyaml is not installed (pip install '.[test]')")
        pytest.skip("pyyaml is not installed (pip install '.[test]')")
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: no default (`$VAR`, `${VAR}`, `${VAR:?err}`, ...)


def references(text: str) -> list[Variable]:
    """The variables a compose string uses; `$$` is a literal dollar, not a reference."""
    found = []
    for m in _REFERENCE.finditer(text):
        if m["escaped"]:
            continue
        if m["named"]:
            found.append(Variable(m["named"], None))
            continue
        braced = _BRACED.fullmatch(m["braced"])
        assert braced is not None, f"malformed interpolation ${{{m['braced']}}} in {text!r}"
        has_default = braced["op"] in (":-", "-")
        found.append(Variable(braced["name"], braced["arg"] if has_default else None))
    return found


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's substitution: `${VAR:-d}` is d when VAR is unset or empty, `${VAR-d}` only
    when unset, `$$` a literal `$`. A reference without a default is a test failure."""

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        [var] = references(m[0])
        assert var.default is not None, f"${var.name} has no default"
        value = env.get(var.name)
        braced = _BRACED.fullmatch(m["braced"])
        assert braced is not None
        if braced["op"] == ":-":
            return value or var.default
        return var.default if value is None else value

    return _REFERENCE.sub(one, text)


def resolve(tree: Any, env: Mapping[str, str]) -> Any:
    """The whole file with every string interpolated, as `docker compose config` would."""
    if isinstance(tree, dict):
        return {key: resolve(value, env) for key, value in tree.items()}
    if isinstance(tree, list):
        return [resolve(value, env) for value in tree]
    if isinstance(tree, str):
        return interpolate(tree, env)
    return tree


def strings(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from strings(value)
    elif isinstance(tree, str):
        yield tree


def services(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return resolve(load_compose(), env or {})["services"]


# ---- Dockerfile and PgBouncer config ------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_instructions() -> list[Instruction]:
    """Instructions with continuation lines joined; comment lines (also inside a continued
    instruction, as Docker treats them) dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


@dataclass(frozen=True)
class Image:
    """What the final stage of docker/Dockerfile makes a container run with."""

    stages: list[list[Instruction]]

    @classmethod
    def read(cls) -> Image:
        stages: list[list[Instruction]] = []
        for instruction in dockerfile_instructions():
            if instruction.keyword == "FROM":
                stages.append([])
            if stages:
                stages[-1].append(instruction)
        return cls(stages)

    @property
    def final(self) -> list[Instruction]:
        return self.stages[-1]

    def last(self, keyword: str) -> str:
        found = [i.args for i in self.final if i.keyword == keyword]
        assert found, f"the final stage has no {keyword}"
        return found[-1]

    @property
    def entrypoint(self) -> list[str]:
        return _exec_form(self.last("ENTRYPOINT"))

    @property
    def cmd(self) -> list[str]:
        return _exec_form(self.last("CMD"))

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in (i.args for i in self.final if i.keyword == "ENV"):
            env.update(item.split("=", 1) for item in shlex.split(args))
        return env

    @property
    def healthcheck(self) -> tuple[dict[str, str], str]:
        """(options, command): the shell-form command Docker runs as `/bin/sh -c`."""
        args = self.last("HEALTHCHECK")
        options: dict[str, str] = {}
        while args.startswith("--"):
            option, _, args = args.partition(" ")
            key, _, value = option[2:].partition("=")
            options[key] = value
        kind, _, command = args.partition(" ")
        assert kind == "CMD" and not command.startswith("["), "HEALTHCHECK must be CMD, shell form"
        return options, command


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def pgbouncer_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None, comment_prefixes=(";", "#"), delimiters=("=",)
    )
    parser.read_string(PGBOUNCER_INI.read_text(encoding="utf-8"))
    return parser


def mount_target(service: Mapping[str, Any], source: Path) -> str:
    """Where a compose service mounts a file of this repository."""
    for volume in service.get("volumes", []):
        src, dst, *_ = volume.split(":")
        if (DOCKER / src).resolve() == source.resolve():
            return dst
    raise AssertionError(f"{source} is not mounted")


# ---- the files, read offline ---------------------------------------------------------------


def test_compose_sends_job_work_through_pgbouncer_and_listen_straight_to_postgres() -> None:
    """LISTEN through a transaction pooler hears nothing, so only job work may go through
    PgBouncer; migrations go direct too, once, before any worker starts."""
    found = services()
    assert set(found) == {"postgres", "pgbouncer", "migrate", "worker", "api"}
    worker, migrate, postgres = found["worker"], found["migrate"], found["postgres"]
    listen_port = int(pgbouncer_ini()["pgbouncer"]["listen_port"])

    work = urlsplit(worker["environment"]["DATABASE_URL"])
    listen = urlsplit(worker["environment"]["LISTEN_DATABASE_URL"])
    direct = urlsplit(migrate["environment"]["DATABASE_URL"])
    assert (work.hostname, work.port) == ("pgbouncer", listen_port)
    assert (listen.hostname, listen.port) == ("postgres", 5432)
    assert direct == listen
    pg_env = postgres["environment"]
    for url in (work, listen):
        assert (url.username, url.password, url.path) == (
            pg_env["POSTGRES_USER"],
            pg_env["POSTGRES_PASSWORD"],
            "/" + pg_env["POSTGRES_DB"],
        )

    assert migrate["command"] == ["migrate"]
    assert worker["command"] == ["run", "--no-migrate"]
    env = worker["environment"]
    assert {
        key: env[key] for key in ("WORKER_METRICS_PORT", "WORKER_METRICS_HOST", "WORKER_LOG_FORMAT")
    } == {
        "WORKER_METRICS_PORT": "9187",
        "WORKER_METRICS_HOST": "0.0.0.0",
        "WORKER_LOG_FORMAT": "json",
    }
    assert "ports" not in worker, "a published host port would clash between replicas"
    assert env["WORKER_METRICS_PORT"] in [str(port) for port in worker["expose"]]

    assert worker["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "pgbouncer": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert found["pgbouncer"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate.get("restart") == "no"

    for service in (migrate, worker):
        assert (DOCKER / service["build"]["context"]).resolve() == ROOT
        assert ROOT / service["build"]["dockerfile"] == DOCKERFILE
    assert worker["image"] == migrate["image"]
    # Docker's SIGKILL must not cut the worker's own graceful shutdown short.
    grace = Settings.model_fields["shutdown_grace"].default
    assert parse_duration(worker["stop_grace_period"]) > grace


def test_compose_api_serves_through_pgbouncer_on_host_loopback_after_migrate() -> None:
    """The api service: requests' queries through PgBouncer, the event stream's LISTEN
    direct; published on the host's loopback only; started after migrate, never migrating
    itself; its healthcheck asks the API's own health route."""
    found = services()
    api, worker = found["api"], found["worker"]
    for key in ("DATABASE_URL", "LISTEN_DATABASE_URL"):
        assert api["environment"][key] == worker["environment"][key]
    command = api["command"]
    assert command[0] == "serve" and "--no-migrate" in command
    port = command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert api["ports"] == [f"127.0.0.1:8080:{port}"]
    assert services({"API_PORT": "9000"})["api"]["ports"] == [f"127.0.0.1:9000:{port}"]
    assert api["depends_on"] == worker["depends_on"]
    assert api["image"] == worker["image"]
    test = api["healthcheck"]["test"]
    assert test[:4] == ["CMD", "sitemap-worker", "health", "--worker"]
    assert test[4] == f"http://127.0.0.1:{port}/api/v3"
    assert (
        parse_duration(api["stop_grace_period"]) > Settings.model_fields["shutdown_grace"].default
    )
    # The session secret is optional (min 32 characters when set): no empty default.
    assert "WORKER_API_SESSION_SECRET" not in api["environment"]
    build_parser().parse_args(command)


def test_every_compose_variable_has_a_default_and_overrides_reach_every_service() -> None:
    """`docker compose up` must work with no .env file, and one password must not drift
    between postgres, PgBouncer's userlist and the workers' URLs."""
    used = [var for text in strings(load_compose()) for var in references(text)]
    assert {var.name for var in used} >= {
        "WORKERS",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
    }
    assert [var.name for var in used if var.default is None] == []

    assert int(services()["worker"]["deploy"]["replicas"]) == 3
    assert int(services({"WORKERS": "5"})["worker"]["deploy"]["replicas"]) == 5

    changed = services({"POSTGRES_PASSWORD": "other-pw", "POSTGRES_USER": "u2"})
    assert changed["postgres"]["environment"]["POSTGRES_PASSWORD"] == "other-pw"
    assert changed["pgbouncer"]["environment"]["POSTGRES_PASSWORD"] == "other-pw"
    for service, key in (
        ("worker", "DATABASE_URL"),
        ("worker", "LISTEN_DATABASE_URL"),
        ("migrate", "DATABASE_URL"),
        ("api", "DATABASE_URL"),
        ("api", "LISTEN_DATABASE_URL"),
    ):
        url = urlsplit(changed[service]["environment"][key])
        assert (url.username, url.password) == ("u2", "other-pw"), (service, key)


def test_compose_healthchecks_gate_startup_on_real_readiness() -> None:
    """Workers start only when postgres serves TCP and a query passes through PgBouncer;
    the one-shot migrate has no health to report, the worker uses the image's HEALTHCHECK."""
    found = services()
    postgres = found["postgres"]["healthcheck"]["test"]
    assert postgres[0] == "CMD-SHELL"
    assert "pg_isready" in postgres[1] and "-h 127.0.0.1" in postgres[1]
    bouncer = found["pgbouncer"]["healthcheck"]["test"]
    assert bouncer[0] == "CMD-SHELL" and "SELECT 1" in bouncer[1]
    assert f"-p {pgbouncer_ini()['pgbouncer']['listen_port']}" in bouncer[1]
    assert found["migrate"]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in found["worker"]


def test_pgbouncer_config_is_transaction_pooling_with_scram_on_the_postgres_service() -> None:
    """The worker needs transaction mode (its statements are prepare-free), and PostgreSQL's
    SCRAM default needs a plain password in the userlist that the entrypoint writes."""
    ini = pgbouncer_ini()
    settings = ini["pgbouncer"]
    assert settings["pool_mode"] == "transaction"
    assert settings["auth_type"] == "scram-sha-256"
    assert settings["unix_socket_dir"] == ""
    assert dict(item.split("=") for item in ini["databases"]["*"].split()) == {
        "host": "postgres",
        "port": "5432",
    }

    bouncer = services()["pgbouncer"]
    assert bouncer["entrypoint"][:2] == ["/bin/sh", "-c"]
    script = bouncer["entrypoint"][2]
    assert f"> {settings['auth_file']} " in script
    assert f"exec pgbouncer {mount_target(bouncer, PGBOUNCER_INI)}" in script
    assert services()["postgres"]["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"


def test_dockerfile_runs_sitemap_worker_as_non_root_with_a_health_check() -> None:
    """`docker run image migrate` must work (ENTRYPOINT + CMD), the container must not run
    as root, and its HEALTHCHECK must ask this container's own worker."""
    image = Image.read()
    assert len(image.stages) >= 2, "multi-stage: build in one stage, run from another"
    base = re.compile(r"python:\$\{PYTHON_VERSION\}-slim(-\w+)?( AS \w+)?")
    assert all(base.fullmatch(stage[0].args) for stage in image.stages)
    version = next(i.args for i in dockerfile_instructions() if i.keyword == "ARG")
    assert version in ("PYTHON_VERSION=3.11", "PYTHON_VERSION=3.12")
    builder, final = image.stages[0], image.final
    assert any("pip wheel" in i.args for i in builder if i.keyword == "RUN")
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies and all(c.startswith("--from=builder ") for c in copies)

    assert image.entrypoint == ["sitemap-worker"]
    assert image.cmd == ["run"]
    user = image.last("USER").split(":")[0]
    assert user not in ("", "root", "0")

    options, command = image.healthcheck
    assert command == "sitemap-worker health --worker http://127.0.0.1:${WORKER_METRICS_PORT}"
    env = image.env
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["WORKER_METRICS_PORT"] == services()["worker"]["environment"]["WORKER_METRICS_PORT"]
    assert env["WORKER_METRICS_PORT"] in image.last("EXPOSE").split()
    # Docker kills a check that overruns: allow the command's two checks their full time.
    per_check = build_parser().parse_args(["health"]).timeout
    assert parse_duration(options["timeout"]) >= timedelta(seconds=2 * per_check)


def test_dockerignore_keeps_exactly_what_the_build_copies() -> None:
    """An allowlist keeps .git and tests out of the build context; it must still let in
    every file the builder stage copies, or the build fails."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = [
        src.rstrip("/")
        for i in Image.read().stages[0]
        if i.keyword == "COPY"
        for src in shlex.split(i.args)[:-1]
        if not src.startswith("--")
    ]
    assert sources and set(sources) == allowed
    assert all((ROOT / src).exists() for src in sources)


def test_docker_compose_v1_validates_the_file(tmp_path: Path) -> None:
    """A real Compose implementation's schema check, when one is installed (Debian's
    docker-compose 1.29); the checks above do not need it."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (v1) is not installed")
    text = COMPOSE.read_text(encoding="utf-8")
    # v1 predates the Compose Specification's top-level `name:`; it checks all the rest.
    without_name = re.sub(r"(?m)^name:.*\n", "", text)
    assert without_name != text
    copy = tmp_path / "compose.yaml"
    copy.write_text(without_name, encoding="utf-8")
    result = subprocess.run(
        [binary, "--project-directory", str(DOCKER), "-f", str(copy), "config"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WORKERS": "5"},
    )
    assert result.returncode == 0, result.stderr
    assert "replicas: 5" in result.stdout
    assert "condition: service_completed_successfully" in result.stdout


# ---- the containers' commands, run here ----------------------------------------------------


@pytest.fixture
def empty_database(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A database without the schema, as the compose stack's postgres starts."""
    with scratch_database(pg_server, "dk") as name:
        yield name


@pytest.fixture
def container_path(tmp_path: Path) -> dict[str, str]:
    """Environment under which `sitemap-worker` (the image's entrypoint, and the first word
    of its HEALTHCHECK) is this checkout, as in the image; an installed script may be
    another checkout's, so a shim comes first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "sitemap-worker"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m worker "$@"\n')
    shim.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT)}


def localize(env: Mapping[str, str], hosts: Mapping[str, str], metrics_port: int) -> dict[str, str]:
    """A container's environment with compose's service names swapped for this machine's
    servers and the metrics endpoint on a free loopback port; everything else as written."""
    result = {}
    for key, value in env.items():
        if str(value).startswith("postgresql://"):
            host = urlsplit(value).hostname
            assert host in hosts, f"{key} points at an unknown service {host!r}"
            result[key] = hosts[host]
        elif key == "WORKER_METRICS_HOST":
            result[key] = "127.0.0.1"
        elif key == "WORKER_METRICS_PORT":
            result[key] = str(metrics_port)
        else:
            result[key] = str(value)
    return result


async def run_command(argv: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_container_commands_migrate_run_through_pgbouncer_and_report_health(
    pg_server: EmbeddedPostgres,
    bouncer: PgBouncer,
    empty_database: str,
    container_path: dict[str, str],
) -> None:
    """What the stack does, minus Docker: migrate's command builds the schema on the direct
    URL, a worker started with the worker service's command and environment runs a job
    through a real PgBouncer, and the image's HEALTHCHECK passes while it runs and fails
    once it has stopped."""
    found = services()
    image = Image.read()
    _, health_command = image.healthcheck
    hosts = {
        "postgres": admin_dsn(pg_server, empty_database),
        "pgbouncer": bouncer.dsn(empty_database),
    }
    port = free_tcp_port()
    image_env = {key: value for key, value in image.env.items() if key != "PATH"}
    base = {**os.environ, **image_env, **container_path}

    migrate_env = {**base, **localize(found["migrate"]["environment"], hosts, port)}
    code, out, err = await run_command(
        [*image.entrypoint, *found["migrate"]["command"]], migrate_env
    )
    assert code == 0, err
    assert out.startswith("applied: 0001_jobs"), out

    env = {**base, **localize(found["worker"]["environment"], hosts, port)}
    assert (env["DATABASE_URL"], env["LISTEN_DATABASE_URL"]) == (
        hosts["pgbouncer"],
        hosts["postgres"],
    )
    proc = await asyncio.create_subprocess_exec(
        *image.entrypoint,
        *found["worker"]["command"],
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = WorkerProcess(proc)
    watcher = await StatusWatcher.open(hosts["postgres"])
    try:
        await worker.wait_ready(timeout=30)
        job_id = await watcher.conn.fetchval(
            "INSERT INTO jobs (job_type, payload) VALUES ('noop', '{}') RETURNING id"
        )
        [row] = await watcher.wait_for(job_id, "completed")
        assert row["attempts"] == 1

        code, out, err = await run_command(["/bin/sh", "-c", health_command], env)
        assert code == 0, out + err

        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    finally:
        await worker.stop()
        await watcher.close()
    # WORKER_LOG_FORMAT=json: every line a JSON object, for the log collector.
    assert worker.lines and all("message" in json.loads(line) for line in worker.lines), (
        worker.log()
    )

    code, out, err = await run_command(["/bin/sh", "-c", health_command], env)
    assert code != 0
    reason = (out + err).strip().splitlines()
    assert len(reason) == 1 and f":{port}" in reason[0], reason


async def test_container_command_api_refuses_open_then_serves_keyed_through_pgbouncer(
    pg_server: EmbeddedPostgres,
    bouncer: PgBouncer,
    empty_database: str,
    container_path: dict[str, str],
) -> None:
    """The api service's command: bound to 0.0.0.0 with no key in the database it refuses
    to start and says why; `api-key create --admin` in the same environment (what the
    compose file tells you to run) prints a key; then serve answers through a real
    PgBouncer, its compose healthcheck passes, requests need the key, and SIGTERM ends it
    cleanly. Only the address differs: the serving run binds 127.0.0.1 on a free port."""
    found = services()
    api = found["api"]
    image = Image.read()
    hosts = {
        "postgres": admin_dsn(pg_server, empty_database),
        "pgbouncer": bouncer.dsn(empty_database),
    }
    image_env = {key: value for key, value in image.env.items() if key != "PATH"}
    base = {**os.environ, **image_env, **container_path}
    env = {**base, **localize(api["environment"], hosts, free_tcp_port())}
    assert env["DATABASE_URL"] == hosts["pgbouncer"]

    migrate_env = {**base, **localize(found["migrate"]["environment"], hosts, 0)}
    code, _, err = await run_command([*image.entrypoint, *found["migrate"]["command"]], migrate_env)
    assert code == 0, err

    code, out, err = await run_command([*image.entrypoint, *api["command"]], env)
    assert code != 0
    assert "refusing to serve on 0.0.0.0 with no API key" in out + err

    code, out, err = await run_command([*image.entrypoint, "api-key", "create", "--admin"], env)
    assert code == 0, err
    key = out.strip().splitlines()[-1]

    port = free_tcp_port()
    container_port = api["command"][api["command"].index("--port") + 1]
    command = _replace_all(" ".join(api["command"]), {"0.0.0.0": "127.0.0.1"}).split()
    command[command.index("--port") + 1] = str(port)
    # serve prints "serving on ..." to stdout; the reader follows stderr: send both there.
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        'exec "$@" 1>&2',
        "sh",
        *image.entrypoint,
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    server = WorkerProcess(proc)
    try:
        await server.wait_for_line(f"serving on .*:{port}", timeout=30)
        health = [
            part.replace(f":{container_port}/", f":{port}/")
            for part in api["healthcheck"]["test"][1:]
        ]
        code, out, err = await run_command(health, env)
        assert code == 0, out + err

        base_url = f"http://127.0.0.1:{port}/api/v3"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base_url}/jobs") as resp:
                assert resp.status == 401
            headers = {"Authorization": f"Bearer {key}"}
            async with session.get(f"{base_url}/jobs", headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["jobs"] == []

        server.signal(signal.SIGTERM)
        assert await server.wait() == 0
    finally:
        await server.stop()


async def test_compose_pgbouncer_service_runs_its_config_and_authenticates_with_scram(
    pg_server: EmbeddedPostgres, pg_base: Path, database: str
) -> None:
    """The pgbouncer service's own entrypoint script, config file and healthcheck, run with
    the local pgbouncer: only the addresses and paths that belong to the container are
    swapped. The userlist it writes must hold the plain password, and SCRAM must refuse a
    wrong one."""
    require_pgbouncer()
    binary = find_pgbouncer()
    assert binary is not None
    password = f"pw-{os.getpid()}-{next(_counter)}"
    bouncer = services(
        {"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": password, "POSTGRES_DB": database}
    )["pgbouncer"]
    settings = pgbouncer_ini()["pgbouncer"]
    container_auth_file = settings["auth_file"]

    account = service_account()  # pgbouncer refuses root; the image runs it unprivileged too
    workdir = pg_base / f"compose-bouncer-{os.getpid()}-{next(_counter)}"
    make_dirs(workdir)
    if account is not None:
        os.chown(workdir, account.pw_uid, account.pw_gid)
    auth_file = workdir / "run" / "userlist.txt"
    port = free_tcp_port()
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        _rewrite_ini(
            PGBOUNCER_INI.read_text(encoding="utf-8"),
            {
                "*": f"host=127.0.0.1 port={pg_server.port}",
                "listen_addr": "127.0.0.1",
                "listen_port": str(port),
                "auth_file": str(auth_file),
            },
        )
    )
    script = _replace_all(
        bouncer["entrypoint"][2],
        {
            container_auth_file: str(auth_file),
            str(Path(container_auth_file).parent): str(auth_file.parent),
            mount_target(bouncer, PGBOUNCER_INI): str(ini),
            "exec pgbouncer ": f"exec {shlex.quote(str(binary))} ",
        },
    )
    env = {**os.environ, **{key: str(value) for key, value in bouncer["environment"].items()}}
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        script,
        env=env,
        cwd="/",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        user=account.pw_uid if account else None,
        group=account.pw_gid if account else None,
        extra_groups=[] if account else None,
    )
    process = WorkerProcess(proc)  # reads pgbouncer's log lines as they arrive
    try:
        await process.wait_for_line("process up", timeout=15)
        assert auth_file.read_text() == f'"postgres" "{password}"\n'
        assert auth_file.stat().st_mode & 0o077 == 0

        conn = await asyncpg.connect(
            f"postgresql://postgres:{password}@127.0.0.1:{port}/{database}", statement_cache_size=0
        )
        try:
            assert await conn.fetchval("SELECT current_database()") == database
        finally:
            await conn.close()
        # SASL: the exchange was SCRAM (an md5 one fails with "password authentication failed").
        with pytest.raises(asyncpg.PostgresError, match="SASL authentication failed"):
            await asyncpg.connect(f"postgresql://postgres:wrong@127.0.0.1:{port}/{database}")

        check = _replace_all(
            bouncer["healthcheck"]["test"][1],
            {
                f"-p {settings['listen_port']} ": f"-p {port} ",
                " psql ": f" {shlex.quote(find_psql())} ",
            },
        )
        code, out, err = await run_command(["/bin/sh", "-c", check], env)
        assert code == 0, out + err + process.log()
    finally:
        await process.stop()


def _rewrite_ini(text: str, values: Mapping[str, str]) -> str:
    """The config with these keys' values replaced; each must occur exactly once."""
    seen: list[str] = []

    def one(m: re.Match[str]) -> str:
        seen.append(m["key"])
        return f"{m['key']} = {values[m['key']]}"

    keys = "|".join(re.escape(key) for key in values)
    rewritten = re.sub(rf"(?m)^(?P<key>{keys})[ \t]*=.*$", one, text)
    assert sorted(seen) == sorted(values), seen
    return rewritten


def _replace_all(text: str, replacements: Mapping[str, str]) -> str:
    """One pass, longest match first; every key must occur."""
    for key in replacements:
        assert key in text, f"{key!r} not in {text!r}"
    pattern = "|".join(re.escape(k) for k in sorted(replacements, key=len, reverse=True))
    return re.sub(pattern, lambda m: replacements[m[0]], text)
