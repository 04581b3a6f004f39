"""Error classification and the retry delay, as pure functions."""

from __future__ import annotations

import random

import asyncpg
import pytest

from worker.errors import (
    PermanentJobError,
    RetryableJobError,
    describe,
    is_permanent,
    retry_delay,
    storable,
)


def test_retry_delay_doubles_and_is_capped():
    rng = random.Random(1)
    delays = [retry_delay(a, base=2, cap=60, rng=rng) for a in range(1, 8)]
    for attempt, delay in enumerate(delays, start=1):
        expected = min(60, 2 * 2 ** (attempt - 1))
        assert expected * 0.9 <= delay <= min(60, expected * 1.1)
    assert delays[-1] == pytest.approx(60, rel=0.1)


def test_database_errors_are_classified_by_sqlstate():
    assert is_permanent(asyncpg.exceptions.DivisionByZeroError("x"))  # 22012
    assert is_permanent(asyncpg.exceptions.UniqueViolationError("x"))  # 23505
    assert not is_permanent(asyncpg.exceptions.DeadlockDetectedError("x"))  # 40P01
    assert not is_permanent(asyncpg.exceptions.AdminShutdownError("x"))  # 57P01
    assert not is_permanent(ConnectionResetError())
    assert is_permanent(PermanentJobError("bad"))
    assert not is_permanent(RetryableJobError("later", delay=3))


def test_describe_is_one_readable_line():
    assert describe(ValueError("bad value")) == "ValueError: bad value"
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(PermanentJobError("invalid payload")) == "invalid payload"
    exc = asyncpg.exceptions.DivisionByZeroError("division by zero")
    assert describe(exc).startswith("database error 22012: division by zero")


def test_a_driver_state_error_reads_as_a_broken_connection_and_is_transient():
    exc = asyncpg.exceptions._base.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    )
    assert describe(exc).startswith("database connection broke in the middle of a statement")
    assert not is_permanent(exc)


def test_describe_spells_out_a_nul_that_postgresql_text_cannot_hold():
    assert describe(ValueError("bad\x00byte")) == "ValueError: bad\\0byte"


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("plain", "plain"),
        ("nul\x00in ascii", "nulin ascii"),
        ("caf\u00e9 \u2014 ok", "caf\u00e9 \u2014 ok"),
        (
            '"\udcff\udcfe"',
            '"\ufffd\ufffd"',
        ),  # bytes FF FE as aiohttp decodes them (surrogateescape)
        ("lone \ud800 high", "lone \ufffd\ufffd\ufffd high"),  # a surrogate that stands for no byte
        ("caf\u00e9\x00\udce9", "caf\u00e9\ufffd"),
    ],
)
def test_storable_text_has_no_nul_and_no_surrogate(text, stored):
    assert storable(text) == stored
    stored.encode("utf-8")  # PostgreSQL's UTF-8 takes it


def test_describe_spells_out_nul_and_cleans_surrogates():
    assert describe(RetryableJobError("a\x00b \udcff")) == "a\\0b \ufffd"
