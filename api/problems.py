"""Every error leaves the api as RFC 9457 problem details, from this one place."""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon
import orjson
from falcon.asgi import Request, Response

from chat import failures
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


class Unexpected:
    """Anything no resource handled: a dependency that is away (503), or a bug (500)."""

    RETRY_AFTER_SECONDS = 2
    LOG_EVERY_SECONDS = 30.0

    def __init__(self) -> None:
        # Per dependency: (when the last warning was logged, requests answered 503 since).
        self._outages: dict[str, tuple[float, int]] = {}

    async def __call__(self, req: Request, resp: Response, exc: Exception, params: dict[str, Any]) -> None:
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
