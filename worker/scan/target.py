"""The job's `domain` value -> a normalised target: host, port and candidate origins.

People type sites every which way (`Example.com.`, `https://example.com/blog`,
`bücher.de:8080`); the scan needs one ASCII host and the origins to try. Bad
values raise ValueError with a message meant for `jobs.error`: the caller fails
the job at once, since retrying cannot fix a typo.

Hosts are encoded the way the HTTP stack will encode them: yarl (under aiohttp)
uses the `idna` package with UTS #46 (IDNA 2008, non-transitional), so
`straße.de` is `xn--strae-oqa.de` as in browsers, not `strasse.de` as Python's
built-in IDNA 2003 codec would say.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

MAX_INPUT = 2048
MAX_HOST = 253
MAX_LABEL = 63

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_OPAQUE_SCHEME = re.compile(
    r"^(?:javascript|data|file|mailto|ftp|about|blob|ws|wss):", re.IGNORECASE
)
# LDH labels; underscores are tolerated (invalid in hostnames, yet resolvers and browsers
# accept them and some sites use them).
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Target:
    """A site to scan. `origins` are tried in order (bare names: https, then http)."""

    host: str  # ASCII (punycode), lower case, no trailing dot; IPv6 without brackets
    port: int | None  # None: the scheme's default
    scheme: str | None  # as given; None for a bare name
    path: str  # what followed the authority ("" if nothing), ignored for discovery
    origins: tuple[str, ...]

    @property
    def origin(self) -> str:
        """The first origin to try."""
        return self.origins[0]

    @property
    def domain(self) -> str:
        """The site's name in the `domains` table: one row however the domain was written.

        Host, plus `:port` unless the port is the default of the scheme given (or of either
        scheme, for a bare name); no scheme and no path: `https://Example.com/`,
        `example.com.` and `EXAMPLE.com:443` are all `example.com`.
        """
        shown = f"[{self.host}]" if ":" in self.host else self.host
        if self.port is None or self.port == _DEFAULT_PORTS.get(self.scheme or "", 0):
            return shown
        if self.scheme is None and self.port in _DEFAULT_PORTS.values():
            return shown
        return f"{shown}:{self.port}"


def parse_target(value: object) -> Target:
    """Parse a `domain` payload value; raise ValueError saying what is wrong."""
    if not isinstance(value, str):
        # ValueError, not TypeError: every payload problem is one kind of error to the caller.
        raise ValueError(f"domain must be a string, got {type(value).__name__}")  # noqa: TRY004
    text = value.strip()
    if not text:
        raise ValueError("domain is empty")
    if len(text) > MAX_INPUT:
        raise ValueError(f"domain is too long ({len(text)} characters)")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError(f"domain {text!r} contains spaces or control characters")
    scheme: str | None = None
    rest = text
    if match := _SCHEME.match(text):
        scheme = match.group(1).lower()
        rest = text[match.end() :]
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"unsupported scheme {scheme!r}: only http and https")
    elif _OPAQUE_SCHEME.match(text):
        raise ValueError(
            f"unsupported scheme {text.split(':', 1)[0].lower()!r}: only http and https"
        )
    elif rest.startswith("//"):
        rest = rest[2:]  # protocol-relative
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        raise ValueError("credentials (user:password@) are not allowed in the domain")
    host_text, port = _split_port(authority)
    host = _normalise_host(host_text)
    path = tail.split("?", 1)[0].split("#", 1)[0]
    return Target(host, port, scheme, path, _origins(host, port, scheme))


def domain_key(value: object) -> str:
    """The normalised domain of a `domain` value (see `Target.domain`); ValueError if invalid."""
    return parse_target(value).domain


def _split_port(authority: str) -> tuple[str, int | None]:
    if not authority:
        raise ValueError("domain has no host name")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {authority!r}")
        host, after = authority[: end + 1], authority[end + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected {after!r} after the IPv6 address")
        return host, _port(after[1:]) if after else None
    if authority.count(":") > 1:  # a bare IPv6 address, e.g. "::1"
        return f"[{authority}]", None
    host, sep, port_text = authority.partition(":")
    return host, (_port(port_text) if sep else None)


def _port(text: str) -> int:
    if not text:
        raise ValueError("port is empty")
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return port


def _normalise_host(host: str) -> str:
    if "%" in host:
        raise ValueError(f"host {host!r} must not be percent-encoded or carry a zone")
    if host.startswith("["):
        try:
            ip = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
        return ip.compressed
    if not host.isascii():
        try:  # case folding, full-width dots and digits, as browsers do
            host = idna.uts46_remap(host, std3_rules=False, transitional=False)
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"invalid international host name {host!r}: {exc}") from None
    host = host.removesuffix(".")  # the root label: "example.com." is "example.com"
    if not host:
        raise ValueError("domain has no host name")
    labels = host.split(".")
    if labels[-1].isascii() and labels[-1].isdigit():
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            # "127.1", "2130706433": legacy numeric forms that resolvers turn into
            # addresses; no real top-level domain is all digits.
            raise ValueError(f"{host!r} is not a valid IPv4 address or host name") from None
    ascii_labels = [_label(label) for label in labels]
    name = ".".join(ascii_labels)
    if len(name) > MAX_HOST:
        raise ValueError(f"host name is too long ({len(name)} characters, at most {MAX_HOST})")
    return name


def _label(label: str) -> str:
    if not label:
        raise ValueError("host name has an empty label (two dots in a row?)")
    if not label.isascii():
        try:
            label = idna.encode(label).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"invalid international label {label!r}: {exc}") from None
    label = label.lower()
    if len(label) > MAX_LABEL:
        raise ValueError(
            f"label {label[:20]}… is too long ({len(label)} characters, at most {MAX_LABEL})"
        )
    if not _LABEL.match(label):
        raise ValueError(f"invalid label {label!r}: letters, digits and inner hyphens only")
    if label.startswith("xn--"):
        try:
            idna.decode(label)
        except (idna.IDNAError, UnicodeError):
            raise ValueError(f"invalid punycode label {label!r}") from None
    return label


def _origins(host: str, port: int | None, scheme: str | None) -> tuple[str, ...]:
    shown = f"[{host}]" if ":" in host else host
    if scheme is not None:
        schemes = [scheme]
    elif port == 80:
        schemes = ["http"]
    elif port == 443:
        schemes = ["https"]
    else:
        schemes = ["https", "http"]
    return tuple(
        f"{s}://{shown}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[s] else "")
        for s in schemes
    )
