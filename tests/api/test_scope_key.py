"""The request's Scope is stored under aiohttp's typed RequestKey where aiohttp has one (3.12+),
so 3.14's NotAppKeyWarning never fires (warnings are errors in this suite); on older aiohttp,
which has no RequestKey and does not warn, under a plain string key."""

from __future__ import annotations

import warnings

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from worker.api.scope import SCOPE, Scope, scope_of


def test_the_scope_key_is_typed_when_aiohttp_offers_one() -> None:
    request_key = getattr(web, "RequestKey", None)
    if request_key is None:
        assert isinstance(SCOPE, str)
    else:
        assert isinstance(SCOPE, request_key)


def test_storing_and_reading_the_scope_warns_nothing() -> None:
    request = make_mocked_request("GET", "/")
    scope = Scope(tenant_id="acme", admin=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        request[SCOPE] = scope
        assert scope_of(request) is scope
