"""parse_target: the ways people type a site, and the values that must fail the job."""

from __future__ import annotations

import pytest

from worker.scan.target import Target, domain_key, parse_target


@pytest.mark.parametrize(
    ("value", "host", "port", "origins"),
    [
        ("example.com", "example.com", None, ("https://example.com", "http://example.com")),
        ("  example.com  ", "example.com", None, ("https://example.com", "http://example.com")),
        ("EXAMPLE.com.", "example.com", None, ("https://example.com", "http://example.com")),
        (
            "www.Example.CO.uk",
            "www.example.co.uk",
            None,
            ("https://www.example.co.uk", "http://www.example.co.uk"),
        ),
        (
            "example.com:8080",
            "example.com",
            8080,
            ("https://example.com:8080", "http://example.com:8080"),
        ),
        ("example.com:443", "example.com", 443, ("https://example.com",)),
        ("example.com:80", "example.com", 80, ("http://example.com",)),
        ("https://example.com", "example.com", None, ("https://example.com",)),
        ("HTTPS://Example.com:443/", "example.com", 443, ("https://example.com",)),
        ("http://example.com:8443", "example.com", 8443, ("http://example.com:8443",)),
        ("http://127.0.0.1:8080", "127.0.0.1", 8080, ("http://127.0.0.1:8080",)),
        ("[::1]:8080", "::1", 8080, ("https://[::1]:8080", "http://[::1]:8080")),
        ("http://[2001:DB8::1]/", "2001:db8::1", None, ("http://[2001:db8::1]",)),
        ("//example.com/x", "example.com", None, ("https://example.com", "http://example.com")),
        ("localhost", "localhost", None, ("https://localhost", "http://localhost")),
        (
            "my_host.example.com",
            "my_host.example.com",
            None,
            ("https://my_host.example.com", "http://my_host.example.com"),
        ),
    ],
)
def test_accepted_forms(value: str, host: str, port: int | None, origins: tuple[str, ...]) -> None:
    target = parse_target(value)
    assert (target.host, target.port, target.origins) == (host, port, origins)
    assert target.origin == origins[0]


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de", "xn--bcher-kva.de"),
        ("bücher。de", "xn--bcher-kva.de"),  # ideographic full stop, as browsers map it
        ("straße.de", "xn--strae-oqa.de"),  # IDNA 2008, like yarl and browsers (not strasse.de)
        ("https://пример.рф/путь", "xn--e1afmkfd.xn--p1ai"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("１２７.０.０.１", "127.0.0.1"),  # full-width digits
    ],
)
def test_international_names_become_punycode(value: str, host: str) -> None:
    assert parse_target(value).host == host


def test_path_is_kept_but_origin_is_what_is_scanned() -> None:
    target = parse_target("https://example.com/blog/sitemap.xml?page=2#top")
    assert target == Target(
        host="example.com",
        port=None,
        scheme="https",
        path="/blog/sitemap.xml",
        origins=("https://example.com",),
    )
    assert parse_target("example.com").path == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "domain is empty"),
        ("   ", "domain is empty"),
        (None, "domain must be a string, got NoneType"),
        (["example.com"], "domain must be a string"),
        ("exa mple.com", "contains spaces or control characters"),
        ("example.com\n", None),  # surrounding whitespace is trimmed: accepted
        ("example.com\x00", "contains spaces or control characters"),
        ("ftp://example.com", "unsupported scheme 'ftp': only http and https"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("javascript:alert(1)", "unsupported scheme 'javascript'"),
        ("user:pass@example.com", "credentials (user:password@) are not allowed"),
        ("https://admin@example.com/", "credentials (user:password@) are not allowed"),
        ("example.com:0", "port 0 is out of range (1-65535)"),
        ("example.com:65536", "port 65536 is out of range (1-65535)"),
        ("example.com:", "port is empty"),
        ("example.com:http", "port 'http' is not a number"),
        ("https://", "domain has no host name"),
        ("https:///path", "domain has no host name"),
        (".", "domain has no host name"),
        ("a" * 64 + ".com", "is too long (64 characters, at most 63)"),
        (".".join(["a" * 63] * 4) + ".com", "host name is too long (259 characters, at most 253)"),
        ("example..com", "empty label"),
        ("example.com..", "empty label"),
        ("-example.com", "invalid label '-example'"),
        ("example-.com", "invalid label 'example-'"),
        ("ex!ample.com", "invalid label 'ex!ample'"),
        ("ex%61mple.com", "must not be percent-encoded"),
        ("xn--zz.com", "invalid punycode label 'xn--zz'"),
        ("☃.net", "invalid international label"),
        ("127.1", "'127.1' is not a valid IPv4 address or host name"),
        ("2130706433", "not a valid IPv4 address"),
        ("256.1.1.1", "not a valid IPv4 address"),
        ("[::1", "unclosed '['"),
        ("[nope]:80", "'[nope]' is not a valid IPv6 address"),
        ("[fe80::1%25eth0]", "zone"),
    ],
)
def test_rejected_with_a_readable_message(value: object, message: str | None) -> None:
    if message is None:
        parse_target(value)
        return
    with pytest.raises(ValueError) as excinfo:
        parse_target(value)
    assert message in str(excinfo.value)


def test_overlong_input_is_rejected_before_parsing() -> None:
    with pytest.raises(ValueError, match="domain is too long"):
        parse_target("a" * 5000)


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("https://Example.com/path?q=1", "example.com"),
        ("example.com.", "example.com"),
        ("EXAMPLE.com:443", "example.com"),
        ("http://example.com:80", "example.com"),
        ("http://example.com:443", "example.com:443"),
        ("127.0.0.1:8765", "127.0.0.1:8765"),
        ("[::1]:80", "[::1]"),
        ("https://[::1]:8443/x", "[::1]:8443"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_domain_key_is_one_name_however_the_domain_is_written(given: str, key: str) -> None:
    assert domain_key(given) == key


def test_domain_key_refuses_what_the_worker_refuses() -> None:
    with pytest.raises(ValueError, match="only http and https"):
        domain_key("ftp://example.com")
