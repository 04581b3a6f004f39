"""`/login`: paste an API key once; the browser then holds a signed HttpOnly SameSite=Strict
session cookie for it (worker/api/auth.py signs and checks it, and looks the key up again
on every request, so revoking the key ends the session). `/logout` drops the cookie."""

from __future__ import annotations

from aiohttp import web

from ..api.auth import COOKIE_NAME, cross_site, public, scope_for_key, set_session_cookie
from ..api.scope import POOL, SETTINGS
from .html import Safe, fill
from .layout import page

MAX_KEY = 512


def safe_next(value: str | None) -> str:
    """Only a path on this site: never another host (`//evil`, `/\\evil`, `https://...`)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(c in value for c in "\r\n\\") or len(value) > 2000:
        return "/"
    return value


def _form(next_path: str) -> Safe:
    return fill(
        '<form class="stack" method="post" action="/login">'
        '<input type="hidden" name="next" value="{next}">'
        '<label>API key<input type="password" name="key" id="key" autocomplete="off" required '
        'maxlength="{max}"></label>'
        '<button type="submit" id="login-button">Log in</button>'
        '<p class="note">Create one with <code>sitemap-worker api-key create --tenant T</code> '
        "(or <code>--admin</code>). The key is sent once; afterwards this browser keeps a "
        "signed session cookie.</p></form>",
        next=next_path,
        max=MAX_KEY,
    )


@public
async def login_form(request: web.Request) -> web.Response:
    return page(request, "Log in", _form(safe_next(request.query.get("next"))))


@public
async def login(request: web.Request) -> web.Response:
    if cross_site(request):
        return page(
            request,
            "Log in",
            _form("/"),
            notice="Cross-site login refused.",
            error=True,
            status=403,
        )
    form = await request.post()
    key = form.get("key")
    next_path = safe_next(str(form.get("next") or "/"))
    if not isinstance(key, str) or not 0 < len(key.strip()) <= MAX_KEY:
        return page(
            request, "Log in", _form(next_path), notice="Paste an API key.", error=True, status=422
        )
    scope = await scope_for_key(request.app[POOL], key.strip(), request.app[SETTINGS])
    if scope is None or scope.key_id is None:
        return page(
            request,
            "Log in",
            _form(next_path),
            notice="Unknown or revoked key.",
            error=True,
            status=401,
        )
    response = web.HTTPSeeOther(location=next_path)
    set_session_cookie(response, request, scope.key_id)
    raise response


@public
async def logout(request: web.Request) -> web.Response:
    if cross_site(request):
        raise web.HTTPForbidden(text="cross-site request refused")
    response = web.HTTPSeeOther(location="/login")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response
