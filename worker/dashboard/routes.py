"""Every dashboard route, in one table: API-CORE's build_app calls add_routes."""

from __future__ import annotations

from aiohttp import web

from .overview import overview
from .static_files import static_file


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview)
    app.router.add_get("/static/{name}", static_file)
