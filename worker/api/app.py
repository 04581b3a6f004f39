"""`build_app`: the HTTP API and the dashboard in one aiohttp application, behind the
error middleware (JSON errors everywhere) and the auth middleware (a Scope per request)."""

from __future__ import annotations

import os

import asyncpg
from aiohttp import web

from ..settings import Settings
from . import domains, events, openapi, results, routes
from .auth import OPEN_ON_LOOPBACK, SESSION_SECRET, auth_middleware
from .errors import BODY_LIMIT, error_middleware
from .scope import POOL, SETTINGS


def build_app(
    pool: asyncpg.Pool,
    settings: Settings,
    *,
    open_on_loopback: bool = False,
    listen_dsn: str | None = None,
    dashboard: bool = True,
) -> web.Application:
    """`open_on_loopback`: answer without a key while the database has none; pass it only
    for a server bound to loopback (serve.py decides). `listen_dsn`: the direct connection
    the event stream LISTENs on (default: the settings' listen URL)."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=BODY_LIMIT
    )
    app[POOL] = pool
    app[SETTINGS] = settings
    app[OPEN_ON_LOOPBACK] = open_on_loopback
    secret = settings.api_session_secret
    app[SESSION_SECRET] = secret.encode() if secret else os.urandom(32)
    app[routes.OPERATIONS] = []
    if listen_dsn is not None:
        app[events.LISTEN_DSN] = listen_dsn
    routes.add_routes(app)
    openapi.add_routes(app)
    results.add_routes(app)
    domains.add_routes(app)
    events.add_routes(app)
    if dashboard:
        from .. import dashboard as dashboard_pages

        dashboard_pages.add_routes(app)
    return app
