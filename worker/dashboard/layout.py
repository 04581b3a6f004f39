"""The page around every dashboard view: navigation, who is signed in, notices; and the
small formatting helpers the views share (times, numbers, status words)."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from ..api.auth import maybe_scope
from ..api.scope import Scope
from .html import Safe, attributes, esc, fill, join, render, tag

NAV = (("/", "Overview"), ("/jobs", "Jobs"), ("/domains", "Domains"), ("/submit", "Submit"))
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def page(
    request: web.Request,
    title: str,
    body: Safe,
    *,
    heading: object = None,
    notice: object = None,
    error: bool = False,
    live: str | None = None,
    status: int = 200,
) -> web.Response:
    """A whole HTML page. `live`: attributes that tell live.js how to keep it current."""
    scope = maybe_scope(request)
    html = render(
        "page.html",
        title=title,
        heading=title if heading is None else heading,
        nav=_nav(request.path),
        who=_who(scope),
        live=Safe(live or ""),
        notice=tag("p", notice, class_="notice error" if error else "notice")
        if notice
        else Safe(""),
        body=body,
    )
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _nav(path: str) -> Safe:
    def current(href: str) -> bool:
        return path == href or (href != "/" and path.startswith(href))

    return join(
        tag("a", label, href=href, aria_current=current(href) and "page") for href, label in NAV
    )


def _who(scope: Scope | None) -> Safe:
    if scope is None:
        return Safe("")
    if scope.key_id is None:
        return esc("open local server (no keys)")
    words = "admin, every tenant" if scope.admin else f"tenant {scope.tenant_id}"
    if scope.read_only:
        words += ", read-only"
    logout = Safe(
        '<form method="post" action="/logout"><button type="submit">Log out</button></form>'
    )
    return fill("{words} {logout}", words=words, logout=logout)


def can_act(request: web.Request) -> bool:
    """Whether to offer working action buttons (the server refuses a read-only key anyway)."""
    scope = maybe_scope(request)
    return scope is not None and not scope.read_only


def status_badge(status: str) -> Safe:
    return tag("span", status, class_=f"status {status}")


def number(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def when(value: datetime | None) -> Safe:
    """A timestamp in UTC, in a <time> element (the full value in its datetime attribute)."""
    if value is None:
        return esc("–")
    return tag("time", value.strftime("%Y-%m-%d %H:%M:%S"), datetime=value.isoformat())


def took(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "–"
    return duration(end - start)


def duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def progress_bar(progress: float, status: str) -> Safe:
    """A progress bar with its percentage as text (what a screen reader or a test reads)."""
    percent = 100.0 if status == "completed" else round(progress * 100, 1)
    return fill(
        '<span class="bar"><progress max="100" value="{v}">{v}%</progress>'
        '<span class="pct">{v}%</span></span>',
        v=f"{percent:g}",
    )


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    title = {404: "Not found", 403: "Not allowed", 422: "Cannot do that"}.get(status, "Error")
    return page(request, title, tag("p", message), status=status)


def table(headings: tuple[str, ...], rows: Safe, **attrs: object) -> Safe:
    """A table that scrolls sideways inside its own box on a narrow screen."""
    head = join(tag("th", h) for h in headings)
    return fill(
        '<div class="scroll"><table{a}><thead><tr>{h}</tr></thead><tbody>{rows}</tbody>'
        "</table></div>",
        a=Safe(attributes(attrs)),
        h=head,
        rows=rows,
    )


def short(text: object, limit: int = 200) -> str:
    value = "" if text is None else str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"
