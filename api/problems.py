"""Every error leaves the api as RFC 9457 problem details, from this one place."""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import Any

import falcon
import orjson
from falcon.asgi import Request, Response

from chat.errors import ChatError
from chat.infra import failures

log = logging.getLogger("api.errors")

PROBLEM = "application/problem+json; charset=utf-8"


def _write(resp: Response, status: int, title: str, detail: str, extra: dict[str, Any] | None = None) -> None:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if extra:
        body.update(extra)
    resp.status = status
    resp.content_type = PROBLEM
    resp.data = orjson.dumps(body)


async def handle_chat_error(req: Request, resp: Response, exc: ChatError, params: dict[str, Any]) -> None:
    if resp is None:  # a WebSocket (RefuseWebSockets answers those before Falcon sees them)
        return
    _write(resp, exc.status, exc.title, exc.detail, exc.extra)
    for name, value in exc.headers.items():
        resp.set_header(name, value)


async def handle_http_error(
    req: Request, resp: Response, exc: falcon.HTTPError, params: dict[str, Any]
) -> None:
    if resp is None:
        return
    status = exc.status_code
    # The reason phrase alone, as every ChatError has it ("Not Found", not Falcon's "404 Not Found").
    title = HTTPStatus(status).phrase
    detail = exc.description or title
    if status == 404 and not exc.description:
        detail = f"No resource at {req.path}."
    elif status == 405:
        detail = f"{req.method} is not allowed on {req.path}."
    _write(resp, status, title, detail)
    if exc.headers:
        resp.set_headers(exc.headers)


class Unexpected:
    """Anything no resource handled: a dependency that is away (503), or a bug (500)."""

    RETRY_AFTER_SECONDS = 2
    LOG_EVERY_SECONDS = 30.0

    def __init__(self) -> None:
        # Per dependency: (when the last warning was logged, requests answered 503 since).
        self._outages: dict[str, tuple[float, int]] = {}

    async def __call__(self, req: Request, resp: Response, exc: Exception, params: dict[str, Any]) -> None:
        if resp is None:
            log.error("unhandled error on WebSocket %s\n%s", req.path, failures.scrubbed_traceback(exc))
            return
        what = failures.unavailable(exc)
        if what is not None:
            self._log_outage(what, exc)
            _write(
                resp,
                503,
                "Service Unavailable",
                f"{what[0].upper()}{what[1:]} is unavailable; try again shortly.",
            )
            resp.set_header("Retry-After", str(self.RETRY_AFTER_SECONDS))
            return
        # A 500 is always a bug: logged with its traceback (SQL parameters withheld), and the client
        # learns nothing internal.
        log.error("unhandled error on %s %s\n%s", req.method, req.path, failures.scrubbed_traceback(exc))
        _write(resp, 500, "Internal Server Error", "The server hit an unexpected error; it has been logged.")

    def _log_outage(self, what: str, exc: Exception) -> None:
        # One line per dependency every 30 s while it is away, not a traceback per request.
        now = time.monotonic()
        logged_at, count = self._outages.get(what, (0.0, 0))
        if now - logged_at >= self.LOG_EVERY_SECONDS:
            log.warning(
                "%s is unavailable (%s: %s); %d more requests answered 503 since the last report",
                what,
                type(exc).__name__,
                failures.unavailable_reason(exc),
                count,
            )
            self._outages[what] = (now, 0)
        else:
            self._outages[what] = (logged_at, count + 1)


def register(app: falcon.asgi.App[Request, Response]) -> None:
    app.add_error_handler(Exception, Unexpected())
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ChatError, handle_chat_error)


class RefuseWebSockets:
    """The api serves no WebSockets (the push process does): answer one with a 404 problem.

    Sent as a real HTTP response through the ASGI WebSocket denial extension where the server
    offers it (uvicorn does); elsewhere the handshake is closed, which a client sees as a 403.
    """

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self._app(scope, receive, send)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": "The api serves no WebSockets: connect to the push process at /ws.",
            }
        )
        headers = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
