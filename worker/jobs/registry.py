"""The registry of job types and the validation of a claimed job's payload."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import PermanentJobError
from .noop import NOOP
from .sitemap_batch import SITEMAP_BATCH
from .sitemap_scan import SITEMAP_SCAN
from .types import Handler, JobType

__all__ = ["Handler", "JobType", "Registry", "default_registry"]


class Registry:
    def __init__(self, types: list[JobType] | None = None) -> None:
        self._types: dict[str, JobType] = {}
        for job_type in types or []:
            self.add(job_type)

    def add(self, job_type: JobType) -> None:
        if job_type.name in self._types:
            raise ValueError(f"job type {job_type.name!r} registered twice")
        self._types[job_type.name] = job_type

    @property
    def names(self) -> list[str]:
        return sorted(self._types)

    def resolve(self, job_type: str, payload_json: str) -> tuple[JobType, BaseModel]:
        """The job type and its validated payload, or a PermanentJobError a person can read."""
        found = self._types.get(job_type)
        if found is None:
            known = ", ".join(self.names)
            raise PermanentJobError(f"unknown job type {job_type!r} (known types: {known})")
        try:
            raw = json.loads(payload_json)
        except (TypeError, ValueError) as exc:  # jsonb always parses; kept for safety
            raise PermanentJobError(f"invalid payload for {job_type}: not JSON ({exc})") from None
        except RecursionError:  # jsonb nests deeper than Python's parser will go
            raise PermanentJobError(f"invalid payload for {job_type}: nested too deeply") from None
        if not isinstance(raw, dict):
            raise PermanentJobError(
                f"invalid payload for {job_type}: expected a JSON object, got {_json_kind(raw)}"
            )
        try:
            return found, found.payload_model.model_validate(raw)
        except ValidationError as exc:
            raise PermanentJobError(f"invalid payload for {job_type}: {_explain(exc)}") from None


def _json_kind(value: Any) -> str:
    kinds = {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _explain(exc: ValidationError) -> str:
    """`field: message (got value)` for each problem, in one line."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        got = err.get("input")
        shown = json.dumps(got, default=str)[:80] if err["type"] != "missing" else None
        parts.append(f"{where}: {err['msg']}" + (f" (got {shown})" if shown else ""))
    return "; ".join(parts)


def default_registry() -> Registry:
    """Every job type this package ships."""
    return Registry([NOOP, SITEMAP_SCAN, SITEMAP_BATCH])
