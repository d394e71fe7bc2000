"""The OpenAPI 3.1 document, generated from the code: the declarations of `api.operations` and
the pydantic models they name.

`describe(routes)` walks the route table the app is built from; a route no declaration describes
is an error, and a test holds the document equal to the routes Falcon really serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from typing import Any

from falcon.routing import map_http_methods
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api import representations as r
from api.operations import OPERATIONS, SELF_DESCRIBING, TAGS, Operation
from api.operations.base import ID, PATH_SCHEMAS

JSON = "application/json"
PROBLEM = "application/problem+json"
REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")
DESCRIBED = {key: op for key, op in OPERATIONS.items() if op.described}


def _responses(op: Operation, path: str, refs: dict[str, str]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, model) in op.ok.items():
        response: dict[str, Any] = {"description": description}
        if status != 204:
            schema: dict[str, Any] = (
                {"$ref": refs[model.__name__]} if model is not None else {"type": "string"}
            )
            response["content"] = {op.media: {"schema": schema}}
        if status in (201, 202) and model is not None and model is not r.TokenPair:
            response["headers"] = {
                "Location": {"schema": {"type": "string"}, "description": "The new resource."}
            }
        responses[str(status)] = response
    errors: dict[int, str] = {}
    if op.body is not None:
        errors[400] = "The body is not JSON, is empty, or has the wrong Content-Type."
        errors[413] = "The body is over 64 KiB."
        errors[422] = "Invalid fields; `errors` names each one."
    if op.query:
        errors[422] = "Invalid fields; `errors` names each one."
    if op.authenticated:
        errors[401] = "No valid server key." if op.caller == "server" else "No valid access token."
    if op.caller == "admin":
        errors[403] = "Not an admin."
    if _PATH_PARAM.search(path):
        errors[404] = "Unknown, or not visible to you."
    if op.limited or op.caller == "server":  # every server call counts against its key's limit
        errors[429] = "Rate limited; retry after `Retry-After` seconds."
    if op.dependencies:
        errors[503] = "Postgres or Redis is unavailable; retry after `Retry-After` seconds."
    errors.update(op.errors)
    for status, description in sorted(errors.items()):
        content = {PROBLEM: {"schema": {"$ref": refs["Problem"]}}}
        responses[str(status)] = {"description": description, "content": content}
    return responses


def _operation(op: Operation, path: str, method: str, refs: dict[str, str]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_"),
        "responses": _responses(op, path, refs),
    }
    if op.description:
        operation["description"] = op.description
    scheme = "serverKey" if op.caller == "server" else "bearer"
    operation["security"] = [{scheme: []}] if op.authenticated else []
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_SCHEMAS.get(name, ID),
        }
        for name in _PATH_PARAM.findall(path)
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": False, "schema": p.schema, "description": p.description}
        for p in op.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        content: dict[str, Any] = {JSON: {"schema": {"$ref": refs[op.body.__name__]}}}
        if op.example is not None:
            content[JSON]["example"] = op.example
        if op.form:
            content["application/x-www-form-urlencoded"] = {"schema": {"$ref": refs[op.body.__name__]}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def _version() -> str:
    try:
        return metadata.version("headless-chat")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


def describe(routes: Iterable[tuple[str, object]]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes (path, resource), as the app adds them.

    Raises LookupError for a route no declaration describes.
    """
    routed = [
        (path, method)
        for path, resource in routes
        if path not in SELF_DESCRIBING
        for method in map_http_methods(resource)
    ]
    missing = [key for key in routed if key not in DESCRIBED]
    if missing:
        raise LookupError(f"routes no declaration in api/operations describes: {missing}")
    return _document(tuple(sorted(routed)))


def _webhook(body_ref: str) -> dict[str, Any]:
    """What a registered webhook URL receives (`POST /api/v1/admin/webhooks`), as OpenAPI 3.1's
    `webhooks` describes requests the api makes."""
    headers = [
        ("X-Webhook-Id", {"type": "string", "format": "uuid"}, "The delivery's id, the same on every retry."),
        ("X-Webhook-Timestamp", {"type": "string", "pattern": "^[0-9]+$"}, "Unix seconds of this attempt."),
        (
            "X-Webhook-Signature",
            {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
            '`sha256=` + hex HMAC-SHA256, keyed with the webhook\'s secret, of `"{timestamp}.{raw body}"`.',
        ),
    ]
    return {
        "post": {
            "summary": "An event, to each webhook subscribed to its type",
            "description": (
                "Any `2xx` answer takes it. A timeout, a connection error or any other status is "
                "retried with exponential back-off, then dead-lettered. docs/api.md shows how to "
                "verify the signature."
            ),
            "parameters": [
                {"name": name, "in": "header", "required": True, "schema": schema, "description": text}
                for name, schema, text in headers
            ],
            "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": body_ref}}}},
            "responses": {"2XX": {"description": "Delivered."}},
        }
    }


@cache
def _document(routed: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    # Built once per route table: generating the schemas is the slowest part of building an app.

    requests = {op.body for op in DESCRIBED.values() if op.body is not None}
    replies = {m for op in DESCRIBED.values() for _, m in op.ok.values() if m is not None}
    replies |= {r.Problem, r.WebhookDelivery}
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in requests]
    pairs += [(m, "serialization") for m in replies]
    keys, definitions = models_json_schema(
        sorted(pairs, key=lambda p: (p[0].__name__, p[1])), ref_template=REF
    )
    refs = {model.__name__: keys[(model, mode)]["$ref"] for model, mode in pairs}

    paths: dict[str, dict[str, Any]] = {}
    for path, method in routed:
        paths.setdefault(path, {})[method.lower()] = _operation(DESCRIBED[(path, method)], path, method, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "headless-chat",
            "version": _version(),
            "description": (
                "Users, conversations and queued message writes. Events arrive over the WebSocket"
                " of the push process: see `/asyncapi.json`. Errors are RFC 9457 problem details."
            ),
        },
        "paths": paths,
        "webhooks": {"event": _webhook(refs["WebhookDelivery"])},
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": (
                        "An access token: from `POST /api/v1/auth/login`, from `POST /api/v1/server/"
                        "tokens`, or a JWT your app's backend signs (docs/integrate.md)."
                    ),
                },
                "serverKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "A server key, for your app's backend only (`headless-chat server-keys "
                        "create NAME`); `/api/v1/server/*` takes nothing else."
                    ),
                },
            },
        },
        "tags": [{"name": t} for t in TAGS],
    }
