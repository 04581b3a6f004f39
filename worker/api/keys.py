"""API keys: made here, stored only as a SHA-256, shown once. A key is 256 random bits
after a fixed `swk_` marker (so a leaked one is easy to grep for); its first characters are
kept in the clear as a prefix to list and revoke it by."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import asyncpg

from ..sql import q

KEY_MARKER = "swk_"
PREFIX_LENGTH = len(KEY_MARKER) + 8
KeyKind = Literal["tenant", "admin", "read_only"]
KINDS: tuple[KeyKind, ...] = ("tenant", "admin", "read_only")


def new_key() -> str:
    return KEY_MARKER + secrets.token_urlsafe(32)


def key_hash(raw_key: str) -> bytes:
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).digest()


def key_prefix(raw_key: str) -> str:
    return raw_key[:PREFIX_LENGTH]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: int
    key: str  # the only time it exists outside the client
    prefix: str
    kind: KeyKind
    tenant_id: str | None
    name: str


async def create_key(
    conn: asyncpg.Connection, kind: KeyKind, tenant_id: str | None, name: str = ""
) -> CreatedKey:
    """Insert a new key (inside the caller's transaction) and return it with its secret."""
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}")
    if kind == "tenant" and not tenant_id:
        raise ValueError("a tenant key needs a tenant")
    raw = new_key()
    row = await conn.fetchrow(
        q("api_key_insert"), tenant_id, name, kind, key_prefix(raw), key_hash(raw)
    )
    return CreatedKey(row["id"], raw, row["prefix"], kind, tenant_id, name)


async def list_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(q("api_key_list")))


class KeyNotFound(LookupError):
    """No key, or more than one, answers to what `api-key revoke` was given."""


async def revoke_key(conn: asyncpg.Connection, which: str) -> tuple[int, str, bool]:
    """Revoke the key with this id or prefix (or the start of one, if only one key has it):
    (id, prefix, True if revoked now, False if it was already)."""
    which = which.strip()
    as_id = int(which) if which.isdigit() and len(which) < 19 else None
    by_prefix = which if len(which) >= len(KEY_MARKER) + 2 else None  # too short to be one
    rows = await conn.fetch(q("api_key_matches"), as_id, by_prefix)
    if as_id is not None:
        rows = [r for r in rows if r["id"] == as_id] or rows
    if not rows:
        raise KeyNotFound(f"no key with id or prefix {which!r} (see `api-key list`)")
    if len(rows) > 1:
        prefixes = ", ".join(r["prefix"] for r in rows[:5])
        raise KeyNotFound(f"{which!r} matches {len(rows)} keys ({prefixes}): give more of it")
    row = rows[0]
    revoked = await conn.fetchval(q("api_key_revoke"), row["id"])
    return row["id"], row["prefix"], revoked is not None
