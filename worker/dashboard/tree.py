"""A scan's sitemap files as a tree (index files hold the files they list), collapsible
with <details>, so it reads without JavaScript."""

from __future__ import annotations

from collections import defaultdict

import asyncpg

from .html import Safe, fill, join, tag
from .layout import number, status_badge

MAX_NESTING = 12  # deeper than the scanner goes (it stops at its own depth limit)


def is_missing(f: asyncpg.Record) -> bool:
    """A well-known path the site simply does not have (the scan does not count it as an
    error either): listed apart, so the tree shows what the site publishes."""
    return f["source"] == "well_known" and f["status"] == "error" and f["http_status"] in (404, 410)


def sitemap_tree(all_files: list[asyncpg.Record]) -> Safe:
    if not all_files:
        return tag("p", "No sitemap file fetched yet.", class_="note")
    files = [f for f in all_files if not is_missing(f)]
    missing = [f for f in all_files if is_missing(f)]
    ids = {f["id"] for f in files}
    children: dict[int | None, list[asyncpg.Record]] = defaultdict(list)
    for f in files:
        parent = f["parent_id"] if f["parent_id"] in ids else None
        children[parent].append(f)
    tree = fill(
        '<ul class="tree" id="sitemap-tree">{items}</ul>',
        items=join(_node(f, children, 0) for f in children[None]),
    )
    if not missing:
        return tree
    return fill(
        '{tree}<details class="note" id="well-known-missing"><summary>{n} well-known path(s) '
        "not there (404/410)</summary><ul>{items}</ul></details>",
        tree=tree,
        n=len(missing),
        items=join(tag("li", f["url"]) for f in missing),
    )


def _node(f: asyncpg.Record, children: dict[int | None, list[asyncpg.Record]], level: int) -> Safe:
    line = _line(f)
    below = children.get(f["id"], []) if level < MAX_NESTING else []
    if not below:
        return fill('<li class="file" data-file="{id}">{line}</li>', id=f["id"], line=line)
    return fill(
        '<li class="file" data-file="{id}"><details><summary>{line} '
        '<span class="meta">({n} files)</span></summary><ul>{items}</ul></details></li>',
        id=f["id"],
        line=line,
        n=len(below),
        items=join(_node(c, children, level + 1) for c in below),
    )


def _line(f: asyncpg.Record) -> Safe:
    url = f["final_url"] or f["url"]
    link = (
        tag("a", url, href=url, rel="noreferrer nofollow")
        if str(url).startswith(("http://", "https://"))
        else tag("span", url)
    )
    meta = [
        f"{f['kind'] or 'unknown'}",
        f"{number(f['url_count'])} URLs",
        f"HTTP {f['http_status']}" if f["http_status"] is not None else "no answer",
    ]
    if f["truncated"]:
        meta.append("truncated")
    error = tag("span", f["error"], class_="err") if f["error"] else Safe("")
    return fill(
        '{badge} {link} <span class="meta">{meta}</span> {error}',
        badge=status_badge(f["status"]),
        link=link,
        meta=" · ".join(meta),
        error=error,
    )
