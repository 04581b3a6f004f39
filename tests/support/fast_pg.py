"""The embedded server the tests run on: durability traded for speed, since a test's data
dies with the test. Kept out of worker/ so the product has no switch that turns fsync off."""

from __future__ import annotations

from worker.embedded_pg import EmbeddedPostgres


class FastPostgres(EmbeddedPostgres):
    """EmbeddedPostgres without fsync at initdb or at run time (and so no full-page writes)."""

    INITDB_OPTIONS = (*EmbeddedPostgres.INITDB_OPTIONS, "--no-sync")
    SERVER_SETTINGS = (
        *EmbeddedPostgres.SERVER_SETTINGS,
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
    )
