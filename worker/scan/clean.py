"""Small helpers the scanner needs and that must not pull in the database driver: the
library is usable without asyncpg, the worker's settings or a job context."""

from __future__ import annotations

import random


def storable(text: str) -> str:
    """`text` as any UTF-8 encoder (and PostgreSQL text) can hold it: no NUL, no lone
    surrogate. A site's bytes reach us as such (aiohttp decodes header bytes that are not
    UTF-8 to surrogates): each undecodable byte becomes U+FFFD, as a browser shows it."""
    if text.isascii():
        return text.replace("\x00", "") if "\x00" in text else text
    try:
        raw = text.encode("utf-8", "surrogateescape")  # undo aiohttp's decoding of a byte
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace").replace("\x00", "")


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with +-10% jitter: base * 2**(attempt-1), at most cap."""
    raw = min(cap, base * (2 ** max(attempt - 1, 0)))
    jitter = (rng or random).uniform(0.9, 1.1)
    return round(min(cap, raw * jitter), 3)
