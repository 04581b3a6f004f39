"""HTML with escaping by default: every value put into a template is escaped unless it is
`Safe` (HTML this package built itself). No template engine: the pages are small, and a
format string whose every field is escaped is all they need (no new dependency)."""

from __future__ import annotations

import html
import string
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any


class Safe(str):
    """Markup known to be safe: inserted as is."""

    __slots__ = ()


def esc(value: object) -> Safe:
    """`value` as text inside HTML (also inside a quoted attribute)."""
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object], sep: str = "") -> Safe:
    """Several pieces of markup (each escaped unless Safe) as one."""
    return Safe(sep.join(esc(part) for part in parts))


class _EscapingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Safe) and not format_spec:
            return value
        return esc(format(value, format_spec))


_FORMATTER = _EscapingFormatter()


def fill(template: str, /, **values: object) -> Safe:
    """`template` (trusted markup with `{name}` fields) with every value escaped."""
    return Safe(_FORMATTER.vformat(template, (), values))


@cache
def template(name: str) -> str:
    """A file of worker/dashboard/templates (read once; it ships inside the wheel)."""
    return (resources.files(__package__) / "templates" / name).read_text(encoding="utf-8")


def render(name: str, /, **values: object) -> Safe:
    return fill(template(name), **values)


def tag(name: str, content: object = "", /, **attrs: object) -> Safe:
    """`<name attr="...">content</name>`; `class_` stands for `class`, None/False drop an
    attribute, True writes it bare."""
    return Safe(f"<{name}{attributes(attrs)}>{esc(content)}</{name}>")


def attributes(attrs: Mapping[str, object]) -> str:
    out = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(out)
