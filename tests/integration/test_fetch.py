"""Fetcher against a real local HTTP server: retries, redirects, caps, timeouts, SSRF guard.

No database; real sockets on 127.0.0.1 only. Tests never sleep: the server's
own delays make time pass, and elapsed times are measured by the fetcher.
"""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.sites import RawSite, Reply, Site, free_port, response
from worker.scan.fetch import Fetcher, FetchLimits, deadline_paused, retry_after_seconds
from worker.scan.netguard import GuardedResolver, NetGuard, is_forbidden
from worker.settings import Settings


def limits(**overrides: Any) -> FetchLimits:
    """Test limits: the guard off (the site is on loopback) and near-instant backoff."""
    values: dict[str, Any] = {
        "allow_private_networks": True,
        "retry_base": 0.01,
        "max_retry_wait": 5.0,
    }
    return FetchLimits(**(values | overrides))


class Collect:
    """A sink that keeps the chunks."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with Fetcher(limits()) as f:
        yield f


async def test_plain_200(site: Site, fetcher: Fetcher) -> None:
    body = b"<urlset>" + b"x" * 200_000 + b"</urlset>"
    site.add("/sitemap.xml", body, content_type="application/xml", headers={"ETag": '"v1"'})
    sink = Collect()
    result = await fetcher.fetch(site.url("/sitemap.xml"), sink)
    assert result.ok and result.error is None
    assert (result.status, result.attempts, result.redirects) == (200, 1, [])
    assert sink.data == body and result.bytes_read == len(body)
    assert result.content_type == "application/xml" and result.etag == '"v1"'
    assert result.final_url == site.url("/sitemap.xml")
    seen = site.requests[0].headers
    assert seen["User-Agent"].startswith("sitemap-worker/") and seen["Accept-Encoding"] == "gzip"


async def test_gzip_body_passed_through_untouched(site: Site, fetcher: Fetcher) -> None:
    site.add("/sitemap.xml", b"<urlset/>" * 1000, gzip=True)
    sink = Collect()
    result = await fetcher.fetch(site.url("/sitemap.xml"), sink)
    assert result.ok and result.content_encoding == "gzip"
    assert sink.data[:2] == b"\x1f\x8b"  # not decoded: the parser sniffs gzip itself
    assert gzip.decompress(sink.data) == b"<urlset/>" * 1000


async def test_async_sink_and_stop(site: Site, fetcher: Fetcher) -> None:
    site.stream("/big", chunk=b"y" * 1000, count=1000)
    got: list[int] = []

    async def sink(chunk: bytes) -> bool:
        got.append(len(chunk))
        return False  # the parser has had enough

    result = await fetcher.fetch(site.url("/big"), sink)
    assert result.ok and result.stopped and len(got) == 1


async def test_sink_errors_propagate(site: Site, fetcher: Fetcher) -> None:
    site.add("/x", b"abc")

    def sink(chunk: bytes) -> None:
        raise KeyError("bug in the caller")

    with pytest.raises(KeyError):
        await fetcher.fetch(site.url("/x"), sink)


async def test_404_is_a_result_not_retried(site: Site, fetcher: Fetcher) -> None:
    result = await fetcher.fetch(site.url("/missing.xml"), Collect())
    assert (result.error, result.status, result.transient) == ("HTTP 404", 404, False)
    assert site.hits["/missing.xml"] == 1 and result.attempts == 1


async def test_5xx_twice_then_200_is_retried(site: Site, fetcher: Fetcher) -> None:
    site.add_sequence("/flaky", [Reply(status=500), Reply(status=502), Reply(b"ok")])
    sink = Collect()
    result = await fetcher.fetch(site.url("/flaky"), sink)
    assert result.ok and sink.data == b"ok"
    assert site.hits["/flaky"] == 3 and result.attempts == 3


async def test_5xx_gives_up_after_max_attempts(site: Site, fetcher: Fetcher) -> None:
    site.add("/down", status=503)
    result = await fetcher.fetch(site.url("/down"), Collect())
    assert (result.error, result.transient, result.attempts) == ("HTTP 503", True, 3)
    assert site.hits["/down"] == 3


async def test_429_retry_after_is_honoured(site: Site, fetcher: Fetcher) -> None:
    site.add_sequence("/limited", [Reply(status=429, headers={"Retry-After": "1"}), Reply(b"ok")])
    result = await fetcher.fetch(site.url("/limited"), Collect())
    assert result.ok and site.hits["/limited"] == 2
    assert result.elapsed >= 0.95
    gap = site.requests[1].at - site.requests[0].at  # measured by the server
    assert gap >= 0.95


async def test_retry_after_beyond_cap_is_returned_not_waited(site: Site, fetcher: Fetcher) -> None:
    site.add("/later", status=429, headers={"Retry-After": "3600"})
    result = await fetcher.fetch(site.url("/later"), Collect())
    assert result.error == "HTTP 429 (Retry-After 3600 s)"
    assert (result.retry_after, result.transient, site.hits["/later"]) == (3600.0, True, 1)


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert (
        retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    )
    assert retry_after_seconds(format_datetime(now - timedelta(days=1), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "\uff11", "1e3", "-5", "0x10", "1.5"])
def test_retry_after_takes_ascii_digits_only(value: str) -> None:
    assert retry_after_seconds(value) is None  # "²".isdigit() is True, float("²") raises


def test_a_huge_retry_after_is_capped_not_an_overflow() -> None:
    assert retry_after_seconds("9" * 400) == 366 * 86400


async def test_retry_after_with_a_superscript_digit_is_a_plain_429(
    site: Site, fetcher: Fetcher
) -> None:
    site.add("/limited", status=429, headers={"Retry-After": "\u00b2"})
    result = await fetcher.fetch(site.url("/limited"), Collect())
    assert (result.error, result.transient, result.retry_after) == ("HTTP 429", True, None)
    assert result.attempts == 3 and site.hits["/limited"] == 3  # retried with backoff


async def test_redirect_chain_with_relative_locations(site: Site, fetcher: Fetcher) -> None:
    site.redirect("/a/start", "next", status=301)  # relative to /a/
    site.redirect("/a/next", "/final.xml?v=1", status=302)
    site.add("/final.xml?v=1", b"done")
    sink = Collect()
    result = await fetcher.fetch(site.url("/a/start"), sink)
    assert result.ok and sink.data == b"done"
    assert result.final_url == site.url("/final.xml?v=1")
    assert [(r.status, r.location) for r in result.redirects] == [
        (301, site.url("/a/next")),
        (302, site.url("/final.xml?v=1")),
    ]


async def test_redirect_loop(site: Site, fetcher: Fetcher) -> None:
    site.redirect("/x", "/y")
    site.redirect("/y", "/x")
    result = await fetcher.fetch(site.url("/x"), Collect())
    assert result.error == "redirect loop" and len(result.redirects) == 2
    assert site.hits["/x"] == 1 and result.attempts == 1


async def test_too_many_redirects(site: Site, fetcher: Fetcher) -> None:
    for i in range(12):
        site.redirect(f"/r{i}", f"/r{i + 1}")
    result = await fetcher.fetch(site.url("/r0"), Collect())
    assert result.error == "too many redirects (11)"
    assert site.hits["/r10"] == 1 and site.hits["/r11"] == 0


async def test_redirect_to_other_scheme_refused(site: Site, fetcher: Fetcher) -> None:
    site.redirect("/ftp", "ftp://example.com/sitemap.xml")
    result = await fetcher.fetch(site.url("/ftp"), Collect())
    assert result.error == "redirect to unsupported scheme 'ftp': only http and https"


async def test_guard_refuses_loopback_before_connecting(site: Site) -> None:
    site.add("/sitemap.xml", b"secret")
    async with Fetcher(FetchLimits(retry_base=0.01)) as guarded:
        result = await guarded.fetch(site.url("/sitemap.xml"), Collect())
    assert result.error == "refused: 127.0.0.1 is a loopback address"
    assert (result.transient, result.attempts, site.hits["/sitemap.xml"]) == (False, 1, 0)


async def test_guard_checks_names_after_resolution(site: Site) -> None:
    site.add("/sitemap.xml", b"secret")
    async with Fetcher(FetchLimits(retry_base=0.01)) as guarded:
        result = await guarded.fetch(f"http://localhost:{site.port}/sitemap.xml", Collect())
    assert result.error == "refused: localhost resolves to 127.0.0.1, a loopback address"
    assert (result.transient, result.attempts, site.hits["/sitemap.xml"]) == (False, 1, 0)


@pytest.mark.parametrize(
    ("location", "error"),
    [
        # Only loopback here: should the guard ever regress, nothing leaves this machine.
        # The private, link-local and metadata ranges are covered in tests/unit/scan/test_netguard.py.
        ("http://127.0.0.2:1/", "refused: 127.0.0.2 is a loopback address"),
        ("http://[::1]:1/", "refused: ::1 is a loopback address"),
    ],
)
async def test_redirect_to_private_address_refused(site: Site, location: str, error: str) -> None:
    site.redirect("/go", location)
    guard = NetGuard(exempt=["127.0.0.1/32"])  # the test site itself is reachable
    async with Fetcher(FetchLimits(retry_base=0.01), guard=guard) as guarded:
        result = await guarded.fetch(site.url("/go"), Collect())
    assert result.error == error and site.hits["/go"] == 1
    assert [r.url for r in result.redirects] == [site.url("/go")]
    assert result.final_url == result.redirects[0].location  # the refused hop


async def test_allow_private_networks_reaches_loopback(site: Site) -> None:
    site.add("/ok", b"ok")
    settings = Settings(database_url="unused", allow_private_networks=True)
    async with Fetcher(FetchLimits.from_settings(settings)) as open_fetcher:
        result = await open_fetcher.fetch(f"http://localhost:{site.port}/ok", Collect())
    assert result.ok


async def test_endless_body_stops_at_cap_with_bounded_memory(site: Site) -> None:
    site.stream("/endless")
    cap = 1024 * 1024
    total = 0

    def count(chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)

    tracemalloc.start()
    try:
        async with Fetcher(limits(max_bytes=cap)) as f:
            result = await f.fetch(site.url("/endless"), count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error == "download cap of 1,048,576 bytes reached"
    assert result.truncated and result.attempts == 1
    assert total == result.bytes_read == cap
    assert peak < 2 * cap, f"peak traced memory {peak:,} bytes"  # no body buffering


async def test_slow_drip_hits_the_total_deadline(site: Site) -> None:
    site.stream("/drip", chunk=b"<", interval=0.05)  # bytes keep coming, never stalls
    async with Fetcher(limits(total_timeout=1.5)) as f:
        result = await f.fetch(site.url("/drip"), Collect())
    assert result.error == "timed out after 1.5 s"
    assert result.truncated and result.bytes_read > 0 and result.attempts == 1  # not re-fed
    assert 1.4 <= result.elapsed < 3.0


async def test_read_timeout_before_headers_is_retried(site: Site) -> None:
    site.add("/slow", b"late", delay=1.0)
    async with Fetcher(limits(read_timeout=0.2, max_attempts=2)) as f:
        result = await f.fetch(site.url("/slow"), Collect())
    assert result.error == "no data for 0.2 s" and result.transient
    assert result.attempts == 2 and site.hits["/slow"] == 2


async def test_silence_while_the_sink_holds_the_body_is_not_a_read_timeout(site: Site) -> None:
    """The read limit counts only our wait for bytes: the server may pause while the sink is
    busy (a slow database downstream) for longer than read_timeout, and the file is whole.
    aiohttp's own sock_read timer counted that pause and cut the file."""
    body = b"<urlset>" + b"x" * 1000 + b"</urlset>"
    release = site.add_split("/paused.xml", body, at=100)
    chunks: list[bytes] = []

    async def busy_sink(chunk: bytes) -> None:
        if not chunks:
            # Elapsed time is the point: the server stays silent for 3x read_timeout while
            # the sink holds its first piece, and sends the rest once the sink is done.
            await asyncio.sleep(0.6)
            release.set()
        chunks.append(chunk)

    async with Fetcher(limits(read_timeout=0.2)) as f:
        result = await f.fetch(site.url("/paused.xml"), busy_sink)
    assert result.error is None and not result.truncated
    assert b"".join(chunks) == body


async def test_silence_mid_body_is_a_read_timeout(site: Site) -> None:
    """The same pause with the fetcher waiting on the server: cut, with the reason."""
    body = b"<urlset>" + b"x" * 1000 + b"</urlset>"
    release = site.add_split("/stalled.xml", body, at=100)
    sink = Collect()
    try:
        async with Fetcher(limits(read_timeout=0.2)) as f:
            result = await f.fetch(site.url("/stalled.xml"), sink)
    finally:
        release.set()
    assert result.error == "no data for 0.2 s" and result.transient
    assert result.truncated and result.attempts == 1  # bytes reached the sink: not re-fed
    assert sink.data == body[:100]


async def test_closed_port_is_an_error_result(fetcher: Fetcher) -> None:
    port = free_port()
    result = await fetcher.fetch(f"http://127.0.0.1:{port}/sitemap.xml", Collect())
    assert result.error is not None and result.error.startswith(
        f"cannot connect to 127.0.0.1:{port}"
    )
    assert result.status is None and result.transient and result.attempts == 3


async def test_unreachable_host_is_not_retried_when_asked(fetcher: Fetcher) -> None:
    port = free_port()
    result = await fetcher.fetch(
        f"http://127.0.0.1:{port}/robots.txt", Collect(), retry_unreachable=False
    )
    assert result.unreachable and result.transient and result.attempts == 1
    assert result.error is not None and result.error.startswith(
        f"cannot connect to 127.0.0.1:{port}"
    )


async def test_guard_refusal_is_unreachable_and_an_answer_is_not(site: Site) -> None:
    site.add("/down", status=503)
    site.redirect("/away", f"http://127.0.0.1:{free_port()}/x")
    async with Fetcher(limits(allow_private_networks=False, max_attempts=1)) as f:
        refused = await f.fetch(site.url("/robots.txt"), Collect())
    async with Fetcher(limits(max_attempts=1)) as f:
        down = await f.fetch(site.url("/down"), Collect())
        away = await f.fetch(site.url("/away"), Collect())
    assert refused.unreachable and refused.error == "refused: 127.0.0.1 is a loopback address"
    assert not down.unreachable and down.error == "HTTP 503"
    assert not away.unreachable and away.status == 302 and away.error.startswith("cannot connect")


async def test_non_utf8_header_bytes_come_back_as_storable_text(fetcher: Fetcher) -> None:
    async with RawSite() as raw:
        raw.add(
            "/s.xml",
            response(
                200,
                b"<urlset/>",
                content_type=b"text/xml; charset=\xff",
                headers=[
                    (b"ETag", b'"\xff\xfe"'),
                    (b"Last-Modified", b"Mon, 01 Jan 2024 \xe9 GMT"),
                    (b"Content-Encoding", b"\xc3\xa9"),
                ],
            ),
        )
        result = await fetcher.fetch(raw.url("/s.xml"), Collect())
    assert result.ok
    assert (result.etag, result.last_modified) == ('"\ufffd\ufffd"', "Mon, 01 Jan 2024 \ufffd GMT")
    assert (result.content_type, result.content_encoding) == ("text/xml; charset=\ufffd", "\u00e9")


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (b"/caf\xe9.xml", "/caf%E9.xml"),  # Latin-1: not UTF-8, kept as its byte
        (b"/s\xc3\xa9.xml", "/s%C3%A9.xml"),  # UTF-8
        (b"/mixed-\xc3\xa9-\xff.xml?q=\xfe", "/mixed-%C3%A9-%FF.xml?q=%FE"),
    ],
)
async def test_redirect_keeps_every_byte_of_location(
    fetcher: Fetcher, location: bytes, path: str
) -> None:
    async with RawSite() as raw:
        raw.add("/old", response(301, headers=[(b"Location", location)]))
        raw.add(path, response(200, b"<urlset/>"))
        sink = Collect()
        result = await fetcher.fetch(raw.url("/old"), sink)
    assert result.ok and sink.data == b"<urlset/>", result.error
    assert result.final_url == raw.url(path) and raw.hits[path] == 1


async def test_per_host_concurrency_limit(site: Site) -> None:
    site.add("/slow", b"ok", delay=0.1)
    async with Fetcher(limits(per_host_concurrency=2)) as f:
        results = await asyncio.gather(*(f.fetch(site.url("/slow"), Collect()) for _ in range(8)))
    assert all(r.ok for r in results)
    assert site.hits["/slow"] == 8 and site.max_in_flight == 2


async def test_politeness_delay_spaces_request_starts(site: Site) -> None:
    site.add("/p", b"ok")
    async with Fetcher(limits(per_host_delay=0.2)) as f:
        await asyncio.gather(*(f.fetch(site.url("/p"), Collect()) for _ in range(3)))
    arrivals = [seen.at for seen in site.requests]
    assert all(b - a >= 0.15 for a, b in pairwise(arrivals))  # 0.2 s minus connect jitter


async def test_fetch_bytes_caps_small_documents(site: Site, fetcher: Fetcher) -> None:
    site.add("/robots.txt", b"a" * 5000)
    result, body = await fetcher.fetch_bytes(site.url("/robots.txt"), 1000)
    assert body == b"a" * 1000 and result.truncated
    assert result.error == "download cap of 1,000 bytes reached"


async def test_invalid_url_is_an_error_result(fetcher: Fetcher) -> None:
    result = await fetcher.fetch("mailto:someone@example.com", Collect())
    assert result.error == "unsupported scheme 'mailto': only http and https"


def test_limits_from_settings() -> None:
    assert FetchLimits.from_settings(SimpleNamespace()) == FetchLimits()
    custom = SimpleNamespace(
        fetch_total_timeout=timedelta(seconds=5), fetch_max_attempts=1, allow_private_networks=True
    )
    got = FetchLimits.from_settings(custom)
    assert (got.total_timeout, got.max_attempts, got.allow_private_networks) == (5.0, 1, True)


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.0.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("0.0.0.0", "an unspecified address"),
        ("0.1.2.3", "an unspecified address"),
        ("255.255.255.255", "the broadcast address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("::1", "a loopback address"),
        ("::", "an unspecified address"),
        ("fd12::1", "a private address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("64:ff9b::169.254.169.254", "a cloud metadata address"),
        ("2002:c0a8:0101::", "a private address"),  # 6to4 around 192.168.1.1
        ("fd00:ec2::254", "a cloud metadata address"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_is_forbidden(ip: str, reason: str | None) -> None:
    assert is_forbidden(ip) == reason


async def test_resolver_keeps_only_allowed_addresses() -> None:
    class Inner:
        async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[dict[str, Any]]:
            return [
                {"hostname": host, "host": h, "port": port, "family": 2, "proto": 6, "flags": 0}
                for h in ("10.0.0.1", "93.184.215.14")
            ]

        async def close(self) -> None:
            pass

    resolver = GuardedResolver(NetGuard(), Inner())  # type: ignore[arg-type]
    got = await resolver.resolve("rebind.example", 80)
    assert [r["host"] for r in got] == ["93.184.215.14"]


@pytest.mark.parametrize("paused", [True, False])
async def test_a_sink_waiting_inside_deadline_paused_does_not_use_up_the_deadline(
    site: Site, paused: bool
) -> None:
    """The sink waits on something slow of its own (here another fetch, which the server
    answers after 1 s) for longer than the whole deadline. Inside deadline_paused() that
    wait is not the server's, and the body arrives whole; outside it, the fetch times out."""
    body = b"<urlset>" + b"x" * 300_000 + b"</urlset>"
    site.add("/sitemap.xml", body)
    site.add("/slow", b"ok", delay=1.0)
    received = bytearray()

    async with (
        Fetcher(limits(total_timeout=0.5, max_attempts=1)) as main,
        Fetcher(limits()) as other,
    ):

        async def sink(chunk: bytes) -> None:
            if not received:  # once, at the first chunk
                if paused:
                    async with deadline_paused():
                        slow, _ = await other.fetch_bytes(site.url("/slow"))
                else:
                    slow, _ = await other.fetch_bytes(site.url("/slow"))
                assert slow.ok
            received.extend(chunk)

        result = await main.fetch(site.url("/sitemap.xml"), sink)
    if paused:
        assert result.ok, result.error
        assert bytes(received) == body
    else:
        assert result.error == "timed out after 0.5 s" and result.truncated
