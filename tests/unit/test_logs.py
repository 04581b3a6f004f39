"""Log lines: readable text by default, JSON on request, the job's id on every job line."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from worker.logs import JobFields, JsonFormatter, TextFormatter, current_job


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("worker.scan.fetch", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    JobFields().filter(rec)
    return rec


def test_text_line_outside_a_job_has_no_job_prefix():
    line = TextFormatter().format(record("listener lost: %s", "boom"))
    assert line.endswith("WARNING listener lost: boom")
    assert "[job" not in line


async def test_text_line_inside_a_job_task_names_the_job():
    async def in_job() -> str:
        current_job.set((42, "sitemap_scan"))
        return TextFormatter().format(record("robots.txt of %s: %s", "a.test", "HTTP 500"))

    line = await asyncio.create_task(in_job())
    assert line.endswith("WARNING [job 42] robots.txt of a.test: HTTP 500")
    # The context variable stayed in that task.
    assert current_job.get() is None


def test_text_line_that_already_names_its_job_is_not_prefixed_twice():
    line = TextFormatter().format(record("job %d noop completed", 7, job_id=7, job_type="noop"))
    assert line.endswith("job 7 noop completed")


def test_json_line_carries_job_fields_extras_and_traceback():
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        rec = record("job %d failed", 9, job_id=9, job_type="noop", attempt=2)
        rec.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["message"] == "job 9 failed"
    assert entry["level"] == "warning" and entry["logger"] == "worker.scan.fetch"
    assert entry["job_id"] == 9 and entry["job_type"] == "noop" and entry["attempt"] == 2
    assert "ValueError: bad" in entry["exc"]
    assert entry["ts"].endswith("+00:00")


def test_json_line_outside_a_job_has_no_job_fields():
    entry = json.loads(JsonFormatter().format(record("ready")))
    assert "job_id" not in entry and "job_type" not in entry


@pytest.mark.parametrize("fmt, formatter", [("text", TextFormatter), ("json", JsonFormatter)])
def test_setup_logging_installs_one_handler(fmt, formatter):
    from worker.logs import setup_logging

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        setup_logging("debug", fmt)
        [handler] = root.handlers
        assert isinstance(handler.formatter, formatter)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
