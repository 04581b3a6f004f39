"""Settings: durations from the environment, and README documents every variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Settings, parse_duration

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("text, seconds", [
    ("2.5", 2.5), ("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), (" 7 ", 7), (3, 3),
])
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
