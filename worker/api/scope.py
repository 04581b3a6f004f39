"""Who is asking, as the rest of the server needs to know it: which tenant's jobs a request may
see and whether it may change anything. The auth middleware sets it on every request; handlers
and the dashboard only ever read it, so a tenant rule lives in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from ..settings import Settings


@dataclass(frozen=True, slots=True)
class Scope:
    """A request's rights. `tenant_id` None means every tenant (an admin key, or a server with
    no keys at all, which only ever listens on loopback)."""

    tenant_id: str | None
    admin: bool
    read_only: bool = False
    key_id: int | None = None  # None: no key (the open loopback server)
    # The tenant a job this request submits belongs to: a tenant key's own; an admin key's
    # tenant if it was created with one (it still sees every tenant's jobs), else none.
    home_tenant: str | None = None

    @property
    def submit_tenant(self) -> str | None:
        """The tenant stored on a job this request creates (never one from the body)."""
        return self.tenant_id if self.tenant_id is not None else self.home_tenant

    def sees(self, tenant_id: str | None) -> bool:
        """May this request see a job of `tenant_id`? Another tenant's job must look missing."""
        return self.tenant_id is None or self.tenant_id == tenant_id


# Set by the auth middleware on every request that reaches a handler. aiohttp 3.14 warns
# (NotAppKeyWarning) about a plain string key, and its typed RequestKey does not exist in our
# lower bound 3.10.10: the typed key where there is one, the string (no warning there) else.
# Typed Any: mypy sees one aiohttp; scope_of checks what it reads.
_REQUEST_KEY: Any = getattr(web, "RequestKey", None)
SCOPE: Any = _REQUEST_KEY("sitemap_worker_scope", Scope) if _REQUEST_KEY else "sitemap_worker.scope"

# What the application holds for its handlers (the pool is the pooled, prepare-free one).
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("sitemap_worker_pool", asyncpg.Pool)
SETTINGS: web.AppKey[Settings] = web.AppKey("sitemap_worker_settings", Settings)


def scope_of(request: web.Request) -> Scope:
    """The request's Scope; a handler reached without the middleware is a bug, said loudly."""
    try:
        scope = request[SCOPE]
    except KeyError:
        raise RuntimeError("no Scope on the request: the auth middleware did not run") from None
    if not isinstance(scope, Scope):
        raise TypeError(f"the request's scope is a {type(scope).__name__}, not a Scope")
    return scope
