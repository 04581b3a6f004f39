"""The SSRF guard's address classes, with no network at all."""

from __future__ import annotations

import ipaddress

import pytest

from worker.scan.netguard import NetGuard, is_forbidden


@pytest.mark.parametrize(
    "ip, reason",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("::ffff:192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", ""),
        ("255.255.255.255", ""),
    ],
)
def test_internal_addresses_are_refused(ip, reason):
    found = is_forbidden(ipaddress.ip_address(ip))
    assert found is not None and reason in found


@pytest.mark.parametrize("ip", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_public_addresses_pass(ip):
    assert is_forbidden(ipaddress.ip_address(ip)) is None


def test_allow_private_lifts_the_guard():
    assert NetGuard(allow_private=True).refusal(ipaddress.ip_address("10.0.0.5")) is None
    assert NetGuard().refusal(ipaddress.ip_address("10.0.0.5")) is not None


@pytest.mark.parametrize(
    "ip, reason",
    [
        ("::ffff:0:a9fe:a9fe", "a cloud metadata address"),  # IPv4-translated 169.254.169.254
        ("::ffff:0:7f00:1", "a loopback address"),  # IPv4-translated 127.0.0.1
        ("::ffff:0:a00:1", "a private address"),  # IPv4-translated 10.0.0.1
        ("168.63.129.16", "a cloud metadata address"),  # Azure's wire server
        ("::ffff:168.63.129.16", "a cloud metadata address"),
    ],
)
def test_translated_and_wire_server_addresses_are_refused(ip, reason):
    assert is_forbidden(ipaddress.ip_address(ip)) == reason
    address = ipaddress.ip_address(ip)
    assert (
        NetGuard().check_host(f"[{ip}]" if ":" in ip else ip) == f"refused: {address} is {reason}"
    )
