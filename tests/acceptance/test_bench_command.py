"""`sitemap-worker bench`: a thin command that runs the benchmarks of the source tree
(tests/benchmarks/), and says in one line where they are when installed without it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

from tests.support.processes import REPO_ROOT, process_env, worker_command

BENCH_OPTIONS = (
    "--jobs",
    "--concurrency",
    "--latency-jobs",
    "--insert-seconds",
    "--insert-clients",
    "--repeat",
    "--force",
    "--scan-files",
    "--scan-urls",
)


async def run(
    argv: list[str], env: dict[str, str], cwd: str | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bench_help_from_a_checkout_lists_the_benchmark_options():
    code, out, err = await run([*worker_command(), "bench", "--help"], process_env({}))
    assert code == 0, err
    assert out.startswith("usage: sitemap-worker bench")
    for option in BENCH_OPTIONS:
        assert option in out, option


async def test_bench_option_mistake_is_one_line_before_anything_connects():
    env = process_env({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    code, out, err = await run([*worker_command(), "bench", "--jobs", "0"], env)
    assert code == 2 and out == ""
    assert (
        err == "sitemap-worker bench: error: argument --jobs: must be from 1 to 100000000, not 0\n"
    )


async def test_bench_queue_runs_from_a_checkout(worker_env):
    code, out, err = await run(
        [
            *worker_command(),
            "bench",
            "--jobs",
            "200",
            "--latency-jobs",
            "5",
            "--insert-seconds",
            "1",
            "--insert-clients",
            "2",
            "--repeat",
            "1",
        ],
        process_env(worker_env),
    )
    assert code == 0, out + err[-2000:]
    assert "200/200 completed with exactly one attempt, 200 claimed" in out
    assert "2. Pickup latency" in out and "3. Insert throughput" in out


def wheel_like_install(target: Path) -> None:
    """What the wheel holds (pyproject's hatch targets): the worker package with sql/ inside
    it, and no tests/."""
    shutil.copytree(
        Path(REPO_ROOT) / "worker", target / "worker", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(Path(REPO_ROOT) / "sql", target / "worker" / "sql")


async def test_bench_without_the_source_tree_says_where_the_benchmarks_are(tmp_path):
    wheel_like_install(tmp_path)
    # This copy of the package first on the path; a database that cannot be reached, so a
    # bench that tried to run would fail differently (exit 1, "cannot connect").
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "PYTHONPATH": str(tmp_path),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    for argv in (["bench"], ["bench", "scan", "--scan-files", "2"], ["bench", "--help"]):
        code, out, err = await run([sys.executable, "-m", "worker", *argv], env, cwd=str(tmp_path))
        assert code == 2, err
        assert out == ""
        assert len(err.splitlines()) == 1, err
        assert err.startswith(
            "sitemap-worker bench: error: the benchmarks live in the source tree "
            "(tests/benchmarks/)"
        )
        assert "python -m worker bench" in err
    code, out, _ = await run([sys.executable, "-m", "worker", "--help"], env, cwd=str(tmp_path))
    assert code == 0 and "bench" in out  # the rest of the command line is all there
