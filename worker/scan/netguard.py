"""SSRF guard: which IP addresses a scan may connect to, enforced after DNS resolution.

A sitemap, a robots.txt line or a redirect can point anywhere, including the
cloud metadata endpoint or the database next door (sitemaps.md §2: none of the
examined tools filters addresses). Checking the *name* before the request is
not enough: DNS can answer differently a moment later (rebinding). So the check
lives in the resolver aiohttp uses for every connection, redirects included,
and the connector connects to exactly the addresses that passed.

aiohttp skips the resolver for IP literals (``connector.py``
``_resolve_host``: ``is_ip_address(host)`` returns the host as is; all-digit
non-canonical IPv4 such as ``2130706433`` or ``127.1`` is rejected there with
``InvalidUrlClientError``). Literals are therefore checked by ``check_host``,
which the fetcher calls before every hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import TypeAlias

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# Most specific first: the first match names the reason.
_V4: tuple[tuple[str, str], ...] = (
    ("169.254.169.254/32", "a cloud metadata address"),
    (
        "168.63.129.16/32",
        "a cloud metadata address",
    ),  # Azure's wire server: a public-looking host address
    ("255.255.255.255/32", "the broadcast address"),
    ("0.0.0.0/8", "an unspecified address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a shared (CGNAT) address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", "a reserved address"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("192.88.99.0/24", "a reserved address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_V6: tuple[tuple[str, str], ...] = (
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("fd00:ec2::254/128", "a cloud metadata address"),
    ("::/96", "a reserved address"),  # IPv4-compatible, deprecated
    ("64:ff9b:1::/48", "a private address"),  # local-use NAT64
    ("100::/64", "a reserved address"),  # discard-only
    ("2001::/23", "a reserved address"),  # IETF protocol assignments, Teredo
    ("2001:db8::/32", "a documentation address"),
    ("fc00::/7", "a private address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a private address"),  # site-local, deprecated
    ("ff00::/8", "a multicast address"),
)
_TABLE: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(net), reason) for net, reason in _V4 + _V6
)
# Prefixes whose last 32 bits are an IPv4 address the packets end up at: NAT64, and
# IPv4-translated (::ffff:0:a.b.c.d, RFC 2765 SIIT; Python's ipv4_mapped sees only ::ffff:a.b.c.d
# and calls this one global).
_CARRY_V4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, translated, 6to4, NAT64): the packets
    end up there."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _CARRY_V4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_forbidden(ip: IPAddress | str) -> str | None:
    """Why a scan must not connect to `ip` ("a private address"), or None if it may."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        inner = _embedded_v4(ip)
        if inner is not None:
            return is_forbidden(inner)
    for net, reason in _TABLE:
        if ip.version == net.version and ip in net:
            return reason
    if not ip.is_global:  # backstop for ranges added to Python's tables later
        return "not a public address"
    return None


def parse_ip(host: str) -> IPAddress | None:
    """`host` as an IP address if it is a literal (brackets and zone allowed), else None."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ForbiddenAddress(OSError):
    """Raised by the resolver: the name only leads to addresses a scan must not reach.

    An OSError so aiohttp wraps it as a connector error (``os_error`` keeps it);
    the fetcher recognises it and never retries it."""


class NetGuard:
    """The address policy. `exempt` networks are allowed even when private (tests, an
    intranet allowlist); `allow_private` switches the guard off entirely."""

    def __init__(self, allow_private: bool = False, exempt: Iterable[str | Network] = ()) -> None:
        self.allow_private = allow_private
        self.exempt: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n) if isinstance(n, str) else n for n in exempt
        )

    def refusal(self, ip: IPAddress | str) -> str | None:
        """The reason `ip` is refused, or None."""
        if self.allow_private:
            return None
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip.split("%", 1)[0])
        if any(ip.version == n.version and ip in n for n in self.exempt):
            return None
        return is_forbidden(ip)

    def check_host(self, host: str) -> str | None:
        """Pre-flight for IP-literal hosts (which aiohttp never resolves): a readable
        refusal like "refused: 10.0.0.5 is a private address", or None. Names pass here;
        the resolver checks what they resolve to."""
        ip = parse_ip(host)
        if ip is None:
            return None
        reason = self.refusal(ip)
        return f"refused: {ip} is {reason}" if reason else None


class GuardedResolver(AbstractResolver):
    """Resolves with aiohttp's default resolver, then drops forbidden addresses.

    If none is left, raises ForbiddenAddress. The connector only ever sees
    (and caches, for its DNS TTL) the filtered list, so there is no window
    between check and connect. A name with both public and private addresses
    keeps only the public ones.
    """

    def __init__(self, guard: NetGuard, inner: AbstractResolver | None = None) -> None:
        self.guard = guard
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        first_refusal: str | None = None
        for result in results:
            reason = self.guard.refusal(result["host"])
            if reason is None:
                allowed.append(result)
            elif first_refusal is None:
                first_refusal = f"refused: {host} resolves to {result['host']}, {reason}"
        if not allowed:
            raise ForbiddenAddress(first_refusal or f"refused: {host} has no address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
