"""A batch's children: one per site as the scan sees it; a bad entry fails alone."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from worker.jobs.sitemap_batch import BatchPayload, plan_children


def planned(domains: list[object], **extra: object) -> list[tuple[object, str | None]]:
    return [(json.loads(p)["domain"], e) for p, e in plan_children(domains, dict(extra))]


def test_spellings_of_one_site_make_one_child_with_the_first_spelling():
    assert planned(
        [
            "HTTP://Example.com",
            "http://example.com",
            "http://example.com/",
            "http://example.com:80/blog",
            " http://EXAMPLE.com. ",
        ]
    ) == [("HTTP://Example.com", None)]


def test_different_origins_stay_apart():
    got = planned(["example.com", "https://example.com", "http://example.com", "example.com:8080"])
    assert [d for d, _ in got] == [
        "example.com",
        "https://example.com",
        "http://example.com",
        "example.com:8080",
    ]
    assert planned(["https://example.com", "example.com:443"]) == [("https://example.com", None)]


def test_bad_entries_carry_the_scans_reason_and_keep_their_place():
    got = planned(["a.example", 7, None, ["x"], "ftp://b.example", "", 7, "a.example"])
    assert [d for d, _ in got] == ["a.example", 7, None, ["x"], "ftp://b.example", ""]
    errors = [e for _, e in got]
    assert errors[0] is None
    assert all(e and e.startswith("invalid payload for sitemap_scan: domain: ") for e in errors[1:])
    assert "got int" in errors[1] and "got NoneType" in errors[2] and "got list" in errors[3]
    assert "unsupported scheme 'ftp'" in errors[4] and "domain is empty" in errors[5]


def test_extra_keys_go_to_every_child():
    ((payload, _),) = plan_children(["a.example"], {"tenant_id": "t", "max_urls": 5})
    assert json.loads(payload) == {"domain": "a.example", "tenant_id": "t", "max_urls": 5}


def test_payload_takes_any_json_entries_but_not_an_empty_list():
    assert BatchPayload.model_validate({"domains": [1, None, "a"]}).domains == [1, None, "a"]
    with pytest.raises(ValidationError, match="at least 1 item"):
        BatchPayload.model_validate({"domains": []})
