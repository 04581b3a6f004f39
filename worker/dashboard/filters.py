"""The /jobs filter, read from a query string or a form: one object the list, the bulk
confirmation and the bulk statement all use, so what is confirmed is what is changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from ..api.scope import Scope

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
MAX_TEXT = 500


class BadFilter(ValueError):
    """A filter value that cannot be used: the page says which and why."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    status: str | None = None
    job_type: str | None = None
    domain: str | None = None
    tenant: str | None = None  # admins only; a tenant's own is forced by its Scope
    error: str | None = None

    @classmethod
    def parse(cls, values: Mapping[str, str], scope: Scope) -> JobFilter:
        def text(name: str) -> str | None:
            value = values.get(name, "").strip()
            if len(value) > MAX_TEXT:
                raise BadFilter(f"{name}: at most {MAX_TEXT} characters")
            return value or None

        status = text("status")
        if status is not None and status not in STATUSES:
            raise BadFilter(f"status: one of {', '.join(STATUSES)}")
        tenant = text("tenant") if scope.tenant_id is None else None
        return cls(status, text("job_type"), text("domain"), tenant, text("error"))

    def tenant_for(self, scope: Scope) -> str | None:
        """The tenant every statement is limited to: the key's own, else the chosen one."""
        return scope.tenant_id if scope.tenant_id is not None else self.tenant

    def args(self, scope: Scope) -> tuple[str | None, ...]:
        """$1..$5 of the dash_jobs_page / dash_bulk_* queries."""
        return (self.tenant_for(scope), self.status, self.job_type, self.domain, self.error)

    def query(self, **extra: object) -> str:
        """As a query string (empty fields left out), with `extra` added."""
        fields = {
            "status": self.status,
            "job_type": self.job_type,
            "domain": self.domain,
            "tenant": self.tenant,
            "error": self.error,
            **extra,
        }
        return urlencode({k: v for k, v in fields.items() if v is not None})

    @property
    def empty(self) -> bool:
        return not any((self.status, self.job_type, self.domain, self.tenant, self.error))

    def describe(self) -> str:
        parts = [
            f"{name} {'contains' if name == 'error' else '='} {value!r}"
            for name, value in (
                ("status", self.status),
                ("type", self.job_type),
                ("domain", self.domain),
                ("tenant", self.tenant),
                ("error", self.error),
            )
            if value is not None
        ]
        return ", ".join(parts) if parts else "all jobs"
