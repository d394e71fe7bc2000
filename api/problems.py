"""Every error leaves the api as RFC 9457 problem details, from this one place."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import orjson
from falcon.asgi import Request, Response

from chat.errors import ChatError

log = logging.getLogger("api.errors")

PROBLEM = "application/problem+json"


def _write(resp: Response, status: int, title: str, detail: str, extra: dict[str, Any] | None = None) -> None:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if extra:
        body.update(extra)
    resp.status = status
    resp.content_type = PROBLEM
    resp.data = orjson.dumps(body)


async def handle_chat_error(req: Request, resp: Response, exc: ChatError, params: dict[str, Any]) -> None:
    _write(resp, exc.status, exc.title, exc.detail, exc.extra)
    for name, value in exc.headers.items():
        resp.set_header(name, value)


async def handle_http_error(
    req: Request, resp: Response, exc: falcon.HTTPError, params: dict[str, Any]
) -> None:
    status = exc.status_code
    title = exc.title or falcon.code_to_http_status(status).split(" ", 1)[-1]
    detail = exc.description or title
    if status == 404 and not exc.description:
        detail = f"No resource at {req.path}."
    elif status == 405:
        detail = f"{req.method} is not allowed on {req.path}."
    _write(resp, status, title, detail)
    if exc.headers:
        resp.set_headers(exc.headers)


async def handle_unexpected(req: Request, resp: Response, exc: Exception, params: dict[str, Any]) -> None:
    # A 5xx is always a bug; it is logged with its traceback and the client learns nothing internal.
    log.exception("unhandled error on %s %s", req.method, req.path)
    _write(resp, 500, "Internal Server Error", "The server hit an unexpected error; it has been logged.")


def register(app: falcon.asgi.App[Request, Response]) -> None:
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ChatError, handle_chat_error)
