"""GET /api/v3/openapi.json and /api/docs, generated from the models that validate the
requests (routes.TABLE). pydantic 2 writes JSON Schema 2020-12, which is OpenAPI 3.1's
own schema dialect, so its `model_json_schema` output goes into `components.schemas`
unchanged: no extra library (aiohttp-pydantic would bring class-based views and its own
request parsing for what is a 100-line document builder here). Routes other parts add
without documenting them (results, events) still appear, with their summary from the
handler's docstring."""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from .auth import public
from .models import ErrorBody
from .routes import OPERATIONS, Operation

REF = "#/components/schemas/{model}"
_DOMAIN_DOC = "Any spelling of the site (`Example.com`, `example.com:8080`): normalised first."
_PARAM = re.compile(r"{(\w+)}")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
    }


def document(app: web.Application) -> dict[str, Any]:
    ops: list[Operation] = app[OPERATIONS]
    wanted: list[tuple[type[BaseModel], Any]] = [(ErrorBody, "serialization")]
    for op in ops:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
    refs, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    documented = {(op.method, op.path) for op in ops}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if not path or not path.startswith("/api/") or route.method in ("HEAD", "*"):
            continue
        if (route.method, path) in documented or path.startswith("/api/docs"):
            continue
        doc = (route.handler.__doc__ or route.handler.__name__).strip().splitlines()[0]
        paths.setdefault(path, {})[route.method.lower()] = {
            "summary": doc,
            "operationId": f"{route.method.lower()}_{route.handler.__name__}",
            "parameters": _path_params(path),
            "responses": {"200": {"description": "OK"}, "404": _error("No such job")},
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sitemap-worker HTTP API",
            "version": __version__,
            "description": "Submit sitemap scans and batches, follow them, cancel and retry; "
            "watch domains over time and read what changed between their scans. "
            "Authorization: Bearer <key> (`sitemap-worker api-key create`); a server with no "
            "keys answers without one, on loopback only.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _path_params(path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1} if name == "job_id" else {"type": "string"},
            **({"description": _DOMAIN_DOC} if name == "domain" else {}),
        }
        for name in _PARAM.findall(path)
    ]


def _operation(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.handler.__name__ + ("_by_id" if "{job_id}" in op.path else ""),
        "parameters": _path_params(op.path),
        "responses": {},
    }
    if op.path.endswith("{job_id}") and op.method == "GET":
        out["operationId"] = "get_job" if "/jobs/" in op.path else "job_status"
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            out["parameters"].append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.method == "POST" and op.body is not None:
        out["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A repeat with the same key (and tenant) returns the first job.",
                "schema": {"type": "string", "maxLength": 255},
            }
        )
    ok: dict[str, Any] = {"description": "OK" if op.status == 200 else "Accepted"}
    if op.response is not None:
        ok["content"] = {"application/json": {"schema": refs[(op.response, "serialization")]}}
    out["responses"][str(op.status)] = ok
    if op.public:
        out["security"] = []
        out["responses"]["503"] = _error("The database is unreachable")
        return out
    out["responses"]["401"] = _error("No key, or an unknown or revoked one")
    if op.method in ("POST", "PUT", "DELETE"):
        out["responses"]["403"] = _error("A read-only key, or a cross-site browser request")
    if "{job_id}" in op.path:
        out["responses"]["404"] = _error("No such job (or another tenant's)")
    if "{domain}" in op.path:
        out["responses"]["404"] = _error("No such domain (or another tenant's)")
    if op.path.endswith(("/cancel", "/retry")):
        out["responses"]["409"] = _error("The job's status does not allow it")
    if op.body is not None:
        out["responses"]["413"] = _error("Body over 1 MiB")
    if op.body is not None or op.query is not None or "{domain}" in op.path:
        out["responses"]["422"] = _error("Invalid input: one detail per field")
    return out


@public
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


@public
async def docs_page(request: web.Request) -> web.Response:
    """A plain page listing every operation of the document (no script, no CDN)."""
    doc = document(request.app)
    rows = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            fields = ""
            if ref:
                schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
                fields = ", ".join(schema.get("properties", {}))
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            rows.append(
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>"
                "<td>{}</td><td>{}</td><td>{}</td></tr>".format(
                    html.escape(method.upper()),
                    html.escape(path),
                    html.escape(op.get("summary", "")),
                    html.escape(params),
                    html.escape(fields),
                    html.escape(", ".join(op.get("responses", {}))),
                )
            )
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        "<title>sitemap-worker API</title><style>body{font:14px sans-serif;margin:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;"
        "text-align:left;vertical-align:top}</style></head><body>"
        f"<h1>{html.escape(doc['info']['title'])}</h1>"
        f"<p>{html.escape(doc['info']['description'])}</p>"
        "<p>Machine-readable: <a href='/api/v3/openapi.json'>/api/v3/openapi.json</a> "
        "(OpenAPI 3.1).</p><table><tr><th>Method</th><th>Path</th><th>What</th>"
        "<th>Parameters</th><th>Body fields</th><th>Answers</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    return web.Response(text=page, content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v3/openapi.json", openapi_json)
    app.router.add_get("/api/docs", docs_page)
