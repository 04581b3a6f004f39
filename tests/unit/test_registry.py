"""Payload validation gives messages a person can act on."""

from __future__ import annotations

import json

import pytest

from worker.errors import PermanentJobError
from worker.jobs.registry import default_registry

BAD = [
    ("noop", "[]", "expected a JSON object, got an array"),
    ("noop", '"x"', "expected a JSON object, got a string"),
    ("noop", "null", "expected a JSON object, got null"),
    ("noop", "3", "expected a JSON object, got a number"),
    ("noop", "true", "expected a JSON object, got a boolean"),
    (
        "noop",
        '{"seconds": "abc"}',
        'seconds: Input should be a valid number, unable to parse string as a number (got "abc")',
    ),
    ("noop", '{"seconds": -5}', "seconds: Input should be greater than or equal to 0 (got -5)"),
    ("noop", '{"seconds": 1e9}', "seconds: Input should be less than or equal to 86400"),
    ("noop", '{"seconds": [1]}', "seconds: Input should be a valid number"),
    ("noop", '{"extra": 1}', "extra: Extra inputs are not permitted (got 1)"),
    ("nope", "{}", "unknown job type 'nope' (known types: noop"),
    ("", "{}", "unknown job type ''"),
]


@pytest.mark.parametrize("job_type, payload, message", BAD)
def test_bad_payloads_raise_readable_permanent_errors(job_type, payload, message):
    with pytest.raises(PermanentJobError) as info:
        default_registry().resolve(job_type, payload)
    assert message in str(info.value)


def test_valid_noop_payload():
    job_type, payload = default_registry().resolve("noop", json.dumps({"seconds": 1.5}))
    assert job_type.name == "noop" and payload.seconds == 1.5


def test_a_payload_nested_deeper_than_python_reads_fails_permanently():
    deep = '{"seconds": ' + "[" * 5000 + "]" * 5000 + "}"  # jsonb takes this (10,000 too)
    with pytest.raises(PermanentJobError, match="invalid payload for noop: nested too deeply"):
        default_registry().resolve("noop", deep)


def _imported_modules(path) -> set[str]:
    """Every module a file imports, relative ones written as `.name` (level dots kept)."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import registry`
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_job_modules_do_not_import_the_registry():
    """The registry lists the job modules; were they to import it back (for JobType), the
    two would form an import cycle that only a function-local import keeps working."""
    from pathlib import Path

    import worker.jobs

    jobs_dir = Path(worker.jobs.__file__).parent
    job_modules = [
        p for p in jobs_dir.rglob("*.py") if p.name not in ("registry.py", "__init__.py")
    ]
    assert any(p.name == "noop.py" for p in job_modules)
    for path in job_modules:
        imported = _imported_modules(path)
        offending = {m for m in imported if m.split(".")[-1] == "registry"}
        assert not offending, f"{path.relative_to(jobs_dir)} imports {offending}"
