"""Mistakes at the command line, tried as a user would: each ends in one clear line on stderr
and a non-zero exit, never a traceback; read-only commands never change a schema."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import pytest

from tests.conftest import admin_dsn, scratch_database
from tests.support.processes import process_env, worker_command
from tests.support.sites import free_port

DEAD = "postgresql://postgres@127.0.0.1:{port}/postgres"  # a closed port on 127.0.0.1


@dataclass(frozen=True)
class Case:
    """`args` run with `env` on top of a working configuration; `words` must all appear
    (case-insensitively) in the single line on stderr. DEAD in env is a closed port."""

    args: tuple[str, ...]
    code: int
    words: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        env = " ".join(f"{k}={v[:20]}" for k, v in self.env.items())
        return " ".join(filter(None, (env, *self.args)))[:70]


def case(*args: str, code: int = 2, words: tuple[str, ...] = (), **env: str) -> Case:
    return Case(args, code, words, env)


CASES = [
    # Arguments: argparse types with the database's own limits (exit 2).
    case("status", "99999999999999999999", words=("JOB_ID", "9223372036854775807")),
    case("status", "0", words=("JOB_ID",)),
    case("status", "--limit", "-1", words=("--limit",)),
    case("enqueue", "--job-type", "noop", "--payload", "NaN", words=("--payload", "NaN")),
    case(
        "enqueue",
        "--job-type",
        "noop",
        "--payload",
        '{"a": "\\u0000"}',
        words=("--payload", "\\u0000"),
    ),
    case(
        "enqueue",
        "--job-type",
        "noop",
        "--payload",
        '{"a": "\\ud800"}',
        words=("--payload", "surrogate"),
    ),
    case("enqueue", "--job-type", "noop", "--payload", "[1]", words=("--payload", "object")),
    case("enqueue", "--job-type", "noop", "--payload", "{", words=("--payload", "not JSON")),
    case("enqueue", "--job-type", "noop", "--max-attempts", "0", words=("--max-attempts", "1 to")),
    case(
        "enqueue",
        "--job-type",
        "noop",
        "--priority",
        "99999999999",
        words=("--priority", "1000000"),
    ),
    case("enqueue", "--job-type", "noop", "--priority", "1000001", words=("--priority", "1000000")),
    case(
        "enqueue", "--job-type", "noop", "--max-attempts", "1001", words=("--max-attempts", "1000")
    ),
    case("enqueue", "example.com", "--max-urls", "0", words=("--max-urls",)),
    case("enqueue", "example.com", "--payload", "{}", words=("--payload", "--job-type")),
    case("enqueue", "--job-type", "noop", "--max-urls", "5", words=("--max-urls", "--job-type")),
    case("enqueue", "--job-type", "noop", "--batch", words=("--batch", "--job-type")),
    case("enqueue", "--job-type", "noop", "example.com", words=("not both",)),
    case("enqueue", words=("DOMAIN",)),
    case("prune", "--older-than", "99999999999d", words=("--older-than", "36500d")),
    case("prune", "--older-than", "soon", words=("--older-than", "not a duration")),
    case("prune", "--older-than", "30d", "--batch", "-1", words=("--batch",)),
    case("run", "--concurrency", "-5", words=("--concurrency", "1 to 1000")),
    case("run", "--concurrency", "0", words=("--concurrency", "1 to 1000")),
    case("run", "--concurrency", "100000", words=("--concurrency", "1 to 1000")),
    case("scan", "example.com", "--concurrency", "0", words=("--concurrency",)),
    case("health", "--timeout", "-1", words=("--timeout",)),
    # Settings: one line naming the variable (exit 2).
    case("status", words=("WORKER_LEASE", "abc", "duration"), WORKER_LEASE="abc"),
    case("status", words=("WORKER_LEASE", "more than 0"), WORKER_LEASE="0"),
    case("status", words=("WORKER_LEASE", "365d"), WORKER_LEASE="99999999999d"),
    case("status", words=("WORKER_STATEMENT_TIMEOUT", "more than 0"), WORKER_STATEMENT_TIMEOUT="0"),
    case("status", words=("WORKER_CONCURRENCY", "at least 1"), WORKER_CONCURRENCY="-1"),
    case("status", words=("WORKER_CONCURRENCY", "at most 1000"), WORKER_CONCURRENCY="100000"),
    case("status", words=("WORKER_LOG_LEVEL", "banana", "INFO"), WORKER_LOG_LEVEL="banana"),
    case(
        "status", words=("WORKER_HEARTBEAT_INTERVAL", "WORKER_LEASE"), WORKER_HEARTBEAT_INTERVAL="5"
    ),
    case("status", words=("WORKER_METRICS_HOST",), WORKER_METRICS_HOST="a" * 64),
    case("status", words=("WORKER_METRICS_PORT",), WORKER_METRICS_PORT="http"),
    # The database: a garbage URL or an unreachable server (exit 1).
    case("status", code=1, words=("DATABASE_URL", "not a PostgreSQL URL"), DATABASE_URL="garbage"),
    case(
        "status",
        code=1,
        words=("DATABASE_URL", "not a valid"),
        DATABASE_URL="postgresql://h:port/db",
    ),
    case(
        "status",
        code=1,
        words=("LISTEN_DATABASE_URL", "connection refused"),
        LISTEN_DATABASE_URL=DEAD,
    ),
    *[
        case(
            *args,
            code=1,
            words=("cannot connect", "DATABASE_URL", "connection refused"),
            DATABASE_URL=DEAD,
        )
        for args in (
            ("migrate",),
            ("run",),
            ("run", "--burst"),
            ("enqueue", "example.com"),
            ("status",),
            ("prune", "--older-than", "30d"),
            ("scan", "example.com"),
        )
    ],
]


async def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *worker_command(),
        *args,
        env=process_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:  # it hung: the test fails, the process goes
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def resolve(env: dict[str, str], port: int) -> dict[str, str]:
    return {k: v.format(port=port) if v == DEAD else v for k, v in env.items()}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_mistake_gives_one_line_and_exit_status(c: Case, worker_env):
    code, out, err = await run_cli({**worker_env, **resolve(c.env, free_port())}, *c.args)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == c.code and len(lines) == 1, (code, err)
    assert lines[0].startswith("sitemap-worker"), lines[0]
    for word in c.words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert out == ""


async def test_read_only_commands_leave_an_empty_database_empty(pg_server):
    """status, enqueue and prune on a configured database never migrate it: they say to run
    migrate, and leave no table behind. migrate then makes them work."""
    with scratch_database(pg_server, "empty") as name:
        dsn = admin_dsn(pg_server, name)
        env = {"DATABASE_URL": dsn}
        for args in (
            ("status",),
            ("status", "1"),
            ("enqueue", "example.com"),
            ("enqueue", "--job-type", "noop"),
            ("prune", "--older-than", "1d"),
            ("run", "--burst", "--no-migrate"),
            ("scan", "example.com", "--no-migrate"),
        ):
            code, _, err = await run_cli(env, *args)
            assert code == 1 and len(err.strip().splitlines()) == 1, (args, err)
            assert "run `sitemap-worker migrate`" in err, (args, err)
        conn = await asyncpg.connect(dsn)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public'"
            )
            functions = await conn.fetchval(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'public'"
            )
        finally:
            await conn.close()
        assert (tables, functions) == (0, 0)

        assert (await run_cli(env, "migrate"))[0] == 0
        code, out, err = await run_cli(
            env, "enqueue", "--job-type", "noop", "--payload", '{"seconds": 0}'
        )
        assert code == 0 and out.strip().isdigit(), err
        code, out, err = await run_cli(env, "status", out.strip())
        assert code == 0 and "noop" in out and '"seconds": 0' in out, err


async def test_worker_refuses_a_schema_missing_migrations_with_no_migrate(
    pg_server, database, direct
):
    """run --no-migrate on a schema a migration behind says so, instead of claiming with
    functions that are not there."""
    last = await direct.fetchval("SELECT max(version) FROM sitemap_worker_migrations")
    await direct.execute("DELETE FROM sitemap_worker_migrations WHERE version = $1", last)
    env = {"DATABASE_URL": admin_dsn(pg_server, database)}
    code, _, err = await run_cli(env, "run", "--burst", "--no-migrate")
    assert code == 1 and len(err.strip().splitlines()) == 1 and last in err, err
    assert "sitemap-worker migrate" in err
    code, _, err = await run_cli(env, "status")  # reading still works on it
    assert code == 0, err
