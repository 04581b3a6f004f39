"""Settings: durations from the environment, and README documents every variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Settings, describe_errors, format_duration, parse_duration

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("2.5", 2.5),
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        (" 7 ", 7),
        (3, 3),
    ],
)
def test_durations_accept_seconds_and_units(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv("WORKER_LEASE", "45s")
    monkeypatch.setenv("WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/x")
    s = Settings()
    assert s.lease == timedelta(seconds=45) and s.concurrency == 3
    assert s.listen_url == "postgresql://u@db/x"  # LISTEN defaults to DATABASE_URL
    assert s.effective_pool_size == 6


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("WORKER_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="concurrency"):
        Settings()


def test_readme_documents_every_setting():
    text = README.read_text()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[0] if alias is not None else f"WORKER_{name.upper()}"
        assert f"`{env}`" in text, f"README.md does not document {env}"


@pytest.mark.parametrize(
    "env, words",
    [
        ({"WORKER_LEASE": "abc"}, ["WORKER_LEASE='abc'", "not a duration", "250ms"]),
        ({"WORKER_LEASE": "0"}, ["WORKER_LEASE='0'", "more than 0"]),
        ({"WORKER_LEASE": "-PT5S"}, ["WORKER_LEASE", "more than 0"]),
        ({"WORKER_LEASE": "99999999999d"}, ["WORKER_LEASE", "at most 365d"]),
        ({"WORKER_STATEMENT_TIMEOUT": "0"}, ["WORKER_STATEMENT_TIMEOUT='0'", "more than 0"]),
        ({"WORKER_STATEMENT_TIMEOUT": "30d"}, ["WORKER_STATEMENT_TIMEOUT", "at most 24d"]),
        ({"WORKER_CONCURRENCY": "-1"}, ["WORKER_CONCURRENCY='-1'", "at least 1"]),
        ({"WORKER_CONCURRENCY": "100000"}, ["WORKER_CONCURRENCY", "at most 1000"]),
        ({"WORKER_LOG_LEVEL": "banana"}, ["WORKER_LOG_LEVEL='banana'", "DEBUG, INFO"]),
        (
            {"WORKER_HEARTBEAT_INTERVAL": "30s"},
            ["WORKER_HEARTBEAT_INTERVAL (30s)", "WORKER_LEASE (30s)"],
        ),
        ({"WORKER_METRICS_HOST": "a" * 64}, ["WORKER_METRICS_HOST", "host name"]),
        (
            {"WORKER_LEASE": "x", "WORKER_POLL_INTERVAL": "y"},
            ["WORKER_LEASE", "WORKER_POLL_INTERVAL"],
        ),
    ],
)
def test_bad_values_are_described_in_one_line_naming_the_variable(monkeypatch, env, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = describe_errors(caught.value)
    assert "\n" not in line
    for word in words:
        assert word in line, line


def test_pauses_may_be_zero_and_levels_are_normalised(monkeypatch):
    monkeypatch.setenv("WORKER_SHUTDOWN_GRACE", "0")
    monkeypatch.setenv("WORKER_FETCH_PER_HOST_DELAY", "0")
    monkeypatch.setenv("WORKER_LOG_LEVEL", "debug")
    s = Settings()
    assert s.shutdown_grace == s.fetch_per_host_delay == timedelta(0)
    assert s.log_level == "DEBUG"


def test_a_duration_too_large_for_python_is_a_value_error():
    with pytest.raises(ValueError, match="out of range"):
        parse_duration("99999999999d")


@pytest.mark.parametrize(
    "seconds, text",
    [(86400 * 365, "365d"), (30, "30s"), (0.25, "250ms"), (90 * 60, "90m"), (1.5, "1500ms")],
)
def test_durations_are_written_back_shortest(seconds, text):
    assert format_duration(timedelta(seconds=seconds)) == text
