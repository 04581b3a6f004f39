"""`/static/{name}`: the dashboard's own stylesheet and script, from inside the package (the
wheel carries them). A fixed list: nothing else on disk can be asked for."""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

from ..api.auth import public

FILES = {"dashboard.css": "text/css", "live.js": "text/javascript"}


@cache
def _read(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


@public
async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return web.Response(
        body=_read(name),
        content_type=FILES[name],
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
