"""Element naming and the sitemap extensions (image, video, news, hreflang).

Names are matched by local name plus a loose namespace check, because the
namespaces vary in the wild (http/https, image/1.1 vs 1.0, sitemaps.org in
place of google.com, news/0.84, a forgotten prefix declaration). Extensions
are kept whole: every image, every video, every alternate, all fields,
deprecated ones included (sitemaps.md §5.2 items 28-29).
"""

from __future__ import annotations

import re
from typing import Any

from worker.scan.model import HTTP_PREFIXES, extension_url

# Codes for the children of <url>/<sitemap>; core fields first (the hot loop
# stores them by index), extension containers after.
SKIP, LOC, LASTMOD, CHANGEFREQ, PRIORITY, IMAGE, VIDEO, NEWS, LINK = range(9)
_CORE = {"loc": LOC, "lastmod": LASTMOD, "changefreq": CHANGEFREQ, "priority": PRIORITY}
_CONTAINERS = {"image": IMAGE, "video": VIDEO, "news": NEWS}
_EXTENSION_WORD = re.compile(r"image|video|news|xhtml|w3\.org/1999", re.IGNORECASE)


def split_tag(tag: str) -> tuple[str, str]:
    """'{ns}local' -> (ns, local). An undeclared prefix ('image:image', which
    libxml2 reports but keeps) gives the prefix as the namespace hint."""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    prefix, _, local = tag.rpartition(":")
    return prefix, local


def local_name(tag: str) -> str:
    return split_tag(tag)[1]


def classify(tag: str, entry_tag: str) -> int:
    """Which field of a <url>/<sitemap> a child tag is."""
    ns, local = split_tag(tag)
    word = _EXTENSION_WORD.search(ns)
    kind = word[0].lower() if word else ""
    if local in _CORE and (not kind or ns == split_tag(entry_tag)[0]):
        return _CORE[local]  # an <image:loc> standing directly under <url> is not the loc
    if local in _CONTAINERS and kind in ("", local):
        return _CONTAINERS[local]  # no namespace at all (forgotten prefix) is accepted
    if local == "link" and kind in ("", "xhtml", "w3.org/1999"):
        return LINK
    return SKIP


def text_of(el: Any) -> str | None:
    text = el.text
    if text is None:
        return None
    return text.strip() or None


def extensions(
    extra: list[tuple[int, Any]], base_url: str, names: dict[str, str]
) -> tuple[Any, Any, Any, Any]:
    """(images, videos, news, alternates) from the extension children of one <url>.

    Links and images are inlined: an extension-heavy sitemap has several of
    each per URL, and this runs once per URL. names caches tag -> local name.
    """
    images: list[dict[str, str | None]] = []
    videos: list[dict[str, Any]] = []
    alternates: list[dict[str, str | None]] = []
    news: dict[str, str | None] | None = None
    for code, el in extra:
        if code == LINK:
            get = el.get
            rel, hreflang, href = get("rel"), get("hreflang"), get("href")
            if rel != "alternate" and not _is_alternate(rel, hreflang):
                continue
            if href is None:
                continue
            href = href.strip()
            if not href.startswith(HTTP_PREFIXES):
                href = extension_url(href, base_url)
                if href is None:
                    continue
            alternates.append(
                {"hreflang": hreflang.strip() or None if hreflang else None, "href": href}
            )
        elif code == IMAGE:
            image: dict[str, str | None] = {
                "loc": None,
                "caption": None,
                "title": None,
                "geo_location": None,
                "license": None,
            }
            for child in el[:]:
                tag = child.tag
                try:
                    name = names[tag]
                except KeyError:
                    name = names[tag] = local_name(tag)
                text = child.text
                image[name] = text.strip() or None if text is not None else None
            loc = image["loc"]
            if loc is None:
                continue
            if not loc.startswith(HTTP_PREFIXES):
                image["loc"] = extension_url(loc, base_url)
            images.append(image)
        elif code == NEWS and news is None:
            news = {}  # news:publication/name|language flattened to publication_name|_language
            for child in el[:]:
                tag = child.tag
                try:
                    name = names[tag]
                except KeyError:
                    name = names[tag] = local_name(tag)
                if name == "publication":
                    for field in child[:]:
                        text = field.text
                        key = "publication_" + _name(names, field.tag)
                        news[key] = text.strip() or None if text is not None else None
                else:
                    text = child.text
                    news[name] = text.strip() or None if text is not None else None
            news = news or None
        elif code == VIDEO:
            videos.append(_video(el, base_url, names))
    return tuple(images), tuple(videos), news, tuple(alternates)


def _is_alternate(rel: str | None, hreflang: str | None) -> bool:
    """rel="alternate" in any case or spacing; a link with no rel counts if it has a hreflang."""
    if rel is None:
        return hreflang is not None
    return "alternate" in rel.lower().split()


def _name(names: dict[str, str], tag: str) -> str:
    try:
        return names[tag]
    except KeyError:
        name = names[tag] = local_name(tag)
        return name


def _video(el: Any, base_url: str, names: dict[str, str]) -> dict[str, Any]:
    """Every video child by local name; attributes as '<child>_<attr>'
    (player_loc_allow_embed, restriction_relationship, uploader_info…),
    repeatable 'tag' and 'price' as lists, nested elements (tvshow) as dicts."""
    video: dict[str, Any] = {}
    for child in el:
        key = _name(names, child.tag)
        if len(child):
            video[key] = {_name(names, g.tag): text_of(g) for g in child}
            continue
        value = text_of(child)
        if key.endswith("_loc"):
            value = extension_url(value, base_url)
        if key == "tag":
            video.setdefault("tag", []).append(value)
        elif key == "price":
            price = {"value": value}
            price.update((_name(names, name), attr) for name, attr in child.attrib.items())
            video.setdefault("price", []).append(price)
        else:
            video[key] = value
            for name, attr in child.attrib.items():
                video[f"{key}_{_name(names, name)}"] = attr
    return video
