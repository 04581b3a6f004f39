"""Who is asking: a Bearer API key, or the dashboard's signed session cookie, becomes the
request's Scope (scope.py). With no key in the database at all, a server bound to loopback
answers without auth (the local default); anywhere else it refuses to start (serve.py).

Cookie sessions: `<key id>.<expiry>.<HMAC-SHA256>` signed with the server's secret; the
key is looked up again on every request, so revoking it ends its sessions at once. A
state-changing request authenticated by cookie must come from this origin (Sec-Fetch-Site
or Origin), the CSRF defence; a Bearer request carries its own proof and is not checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from .. import connections
from ..settings import Settings
from ..sql import q
from .errors import error_response
from .keys import key_hash
from .scope import POOL, SCOPE, SETTINGS, Scope

COOKIE_NAME = "sitemap_worker_session"
SESSION_TTL = 12 * 3600  # seconds a session cookie stays valid
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The server's cookie-signing secret (bytes) and whether it may answer without a key
# (only ever True while bound to loopback): set by build_app.
SESSION_SECRET: web.AppKey[bytes] = web.AppKey("sitemap_worker_session_secret", bytes)
OPEN_ON_LOOPBACK: web.AppKey[bool] = web.AppKey("sitemap_worker_open_on_loopback", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC = "__sitemap_worker_public__"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def public(handler: Handler) -> Handler:
    """Mark a route handler that answers without credentials (health, the OpenAPI document,
    the docs page, the dashboard's login and static files). A request that carries valid
    credentials still gets its Scope (read it with `maybe_scope`)."""
    setattr(handler, _PUBLIC, True)
    return handler


def maybe_scope(request: web.Request) -> Scope | None:
    scope = request.get(SCOPE)
    return scope if isinstance(scope, Scope) else None


def is_loopback(host: str) -> bool:
    """Is this bind address (or host name) one only this machine can reach?"""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def scope_from_row(row: asyncpg.Record | None) -> Scope | None:
    if row is None:
        return None
    kind, tenant = row["kind"], row["tenant_id"]
    if kind == "admin":
        return Scope(tenant_id=None, admin=True, key_id=row["id"], home_tenant=tenant)
    return Scope(
        tenant_id=tenant,
        admin=False,
        read_only=kind == "read_only",
        key_id=row["id"],
        home_tenant=tenant,
    )


async def scope_for_key(
    pool: asyncpg.Pool, raw_key: str, settings: Settings | None = None
) -> Scope | None:
    """The Scope of a live key, or None for an unknown or revoked one (marks it used)."""
    async with connections.pooled_transaction(pool, _or_default(settings)) as conn:
        row = await conn.fetchrow(q("api_key_by_hash"), key_hash(raw_key))
    return scope_from_row(row)


async def scope_for_key_id(
    pool: asyncpg.Pool, key_id: int, settings: Settings | None = None
) -> Scope | None:
    """The Scope of a live key by its id (a session cookie's), None once it is revoked."""
    async with connections.pooled_transaction(pool, _or_default(settings)) as conn:
        row = await conn.fetchrow(q("api_key_by_id"), key_id)
    return scope_from_row(row)


async def keys_exist(pool: asyncpg.Pool, settings: Settings) -> bool:
    async with connections.pooled_transaction(pool, settings) as conn:
        return bool(await conn.fetchval(q("api_keys_exist")))


def _or_default(settings: Settings | None) -> Settings:
    """Only the statement timeout is read: its default, when a caller has no Settings."""
    return settings if settings is not None else Settings.model_construct()


def _sign(message: str, secret: bytes) -> str:
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def session_cookie_value(
    key_id: int, secret: bytes, *, ttl: int = SESSION_TTL, now: float | None = None
) -> str:
    """`<key id>.<expiry, unix seconds>.<signature>`: set it HttpOnly, SameSite=Strict."""
    expires = int((time.time() if now is None else now) + ttl)
    message = f"{key_id}.{expires}"
    return f"{message}.{_sign(message, secret)}"


def session_key_id(value: str, secret: bytes, *, now: float | None = None) -> int | None:
    """The key id a session cookie carries, or None if it is forged, malformed or expired
    (the caller still checks that the key is live)."""
    parts = value.split(".")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    message = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(message, secret), parts[2]):
        return None
    if int(parts[1]) < (time.time() if now is None else now):
        return None
    key_id = int(parts[0])
    return key_id if 0 < key_id < 2**63 else None


def set_session_cookie(response: web.StreamResponse, request: web.Request, key_id: int) -> None:
    """For the dashboard's login: a signed HttpOnly SameSite=Strict session for this key."""
    response.set_cookie(
        COOKIE_NAME,
        session_cookie_value(key_id, request.app[SESSION_SECRET]),
        max_age=SESSION_TTL,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )


def bearer_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def same_origin(request: web.Request) -> bool:
    """Positive proof that a browser sent this from our own pages."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    return origin is not None and origin == f"{request.scheme}://{request.host}"


def cross_site(request: web.Request) -> bool:
    """Evidence that a browser sent this from another site's page (curl sends neither)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is not None and origin != f"{request.scheme}://{request.host}"


def _host_is_loopback(request: web.Request) -> bool:
    """The Host header names this machine: a page of another site that re-points its own
    name at 127.0.0.1 (DNS rebinding) gets nothing from the open server."""
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return is_loopback(host)


def _wants_html(request: web.Request) -> bool:
    return not request.path.startswith("/api/") and "text/html" in request.headers.get("Accept", "")


def _refuse(status: int, message: str, request: web.Request) -> web.StreamResponse:
    if status == 401 and request.method == "GET" and _wants_html(request):
        raise web.HTTPSeeOther(location=f"/login?next={request.path_qs}")
    headers = {"WWW-Authenticate": 'Bearer realm="sitemap-worker"'} if status == 401 else {}
    return error_response(status, message, headers=headers)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sets request[SCOPE], or answers 401/403 itself."""
    if request.match_info.http_exception is not None:
        return await handler(request)  # 404 / 405: no route to guard
    app = request.app
    pool, settings = app[POOL], app[SETTINGS]
    is_public = getattr(handler, _PUBLIC, False)
    scope: Scope | None = None
    by_cookie = False
    raw = bearer_key(request)
    if raw is not None:
        scope = await scope_for_key(pool, raw, settings)
        if scope is None and not is_public:
            return _refuse(401, "unknown or revoked API key", request)
    elif (cookie := request.cookies.get(COOKIE_NAME)) is not None:
        key_id = session_key_id(cookie, app[SESSION_SECRET])
        if key_id is not None:
            scope = await scope_for_key_id(pool, key_id, settings)
            by_cookie = scope is not None
    if scope is None and not is_public:
        if app[OPEN_ON_LOOPBACK] and not await keys_exist(pool, settings):
            if not _host_is_loopback(request):
                return _refuse(403, "the server without keys answers only to localhost", request)
            scope = Scope(tenant_id=None, admin=True)
            by_cookie = True  # a browser's ambient access: same CSRF rule as a cookie
        else:
            return _refuse(401, "an API key is required: Authorization: Bearer <key>", request)
    if scope is not None:
        request[SCOPE] = scope
    if is_public:
        return await handler(request)
    assert scope is not None
    if request.method not in SAFE_METHODS:
        if scope.read_only:
            return _refuse(403, "this key is read-only", request)
        if by_cookie and (
            cross_site(request) or (scope.key_id is not None and not same_origin(request))
        ):
            return _refuse(403, "cross-site request refused", request)
    return await handler(request)
