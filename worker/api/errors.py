"""Every error a client gets is JSON `{"error": ..., "details": [...]}`: our own refusals
(ApiError), aiohttp's (unknown route 404, wrong method 405, body too large 413), a body
that does not validate (422, one detail per field), and anything unexpected (500, logged
here with its traceback, never sent to the client)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..cli_args import json_problem
from ..errors import CONNECTION_ERRORS

log = logging.getLogger(__name__)

BODY_LIMIT = 1024 * 1024  # bytes: larger bodies get 413 before they are read
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """A refusal with its status code, said to the client as is."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []


def error_response(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"error": message, "details": details or []}, status=status, headers=headers or None
    )


def not_found(what: str = "job") -> ApiError:
    """Missing and another tenant's look the same."""
    return ApiError(404, f"no such {what}")


def validation_details(exc: ValidationError, where: str = "body") -> list[dict[str, Any]]:
    """pydantic's errors as `{loc, msg, type}`, without the input (it may be huge or secret)."""
    return [
        {
            "loc": [where, *err["loc"]],
            "msg": str(err["msg"]).removeprefix("Value error, "),
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_model(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`: 413 over BODY_LIMIT, 422 when it is not JSON, not
    storable (NUL, lone surrogates) or does not validate, with each field's problem."""
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        raise ApiError(413, f"request body over {BODY_LIMIT} bytes")
    raw = await request.read()  # aiohttp enforces client_max_size (BODY_LIMIT) as it reads
    try:
        data = json.loads(raw or b"null", parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ApiError(
            422,
            "the body is not valid JSON",
            [{"loc": ["body"], "msg": detail, "type": "json_invalid"}],
        ) from None
    if not isinstance(data, dict):
        raise ApiError(
            422,
            "the body must be a JSON object",
            [{"loc": ["body"], "msg": f"got {type(data).__name__}", "type": "model_type"}],
        )
    problem = json_problem(data)
    if problem:
        raise ApiError(422, "the body cannot be stored", [{"loc": ["body"], "msg": problem}])
    return validate(model, data)


def validate(model: type[M], data: Any, where: str = "body") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(
            422, f"invalid {where}: see details", validation_details(exc, where)
        ) from None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "text/html":
            raise  # redirects, and pages that rendered their own error
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        message = exc.reason
        if exc.status == 413:
            message = f"request body over {BODY_LIMIT} bytes"
        elif exc.status == 405:
            message = f"method {request.method} not allowed here"
        elif exc.status == 404:
            message = f"no route {request.path}"
        return error_response(exc.status, message, headers=headers)
    except ValidationError as exc:  # a model validated in a handler
        return error_response(422, "invalid input: see details", validation_details(exc))
    except (asyncpg.QueryCanceledError, asyncpg.TooManyConnectionsError, *CONNECTION_ERRORS):
        log.warning("%s %s: database unavailable", request.method, request.path, exc_info=True)
        return error_response(503, "database unavailable, try again", headers={"Retry-After": "2"})
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error (logged on the server)")
