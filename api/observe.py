"""Request metrics and spans, `/metrics`, and the lifespan hook that closes this process's clients."""

from __future__ import annotations

import time
from typing import Any

from falcon.asgi import Request, Response

from api.deps import Deps
from chat.infra import logformat, metrics, tracing
from chat.infra.serving import SECURITY_HEADERS


class RequestMetrics:
    async def process_request(self, req: Request, resp: Response) -> None:
        req.context.started = time.perf_counter()
        # For LOG_FORMAT=json's request_id: the request runs in a task of its own, so this is its alone.
        logformat.REQUEST_ID.set(logformat.request_id_from(req.get_header("X-Request-Id")))

    async def process_response(
        self, req: Request, resp: Response, resource: Any, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "started", None)
        if started is None:
            return
        # The route template, not the path: ids in label values would explode the series count.
        route = req.uri_template or "unmatched"
        status = resp.status if isinstance(resp.status, int) else int(str(resp.status)[:3])
        metrics.HTTP_REQUESTS.labels(req.method, route, str(status)).inc()
        metrics.HTTP_LATENCY.labels(req.method, route).observe(time.perf_counter() - started)


class RequestSpans:
    """A span per request, the root of a message's trace (chat.infra.tracing); in the middleware
    only while tracing is on, so that it costs nothing otherwise."""

    async def process_request(self, req: Request, resp: Response) -> None:
        req.context.trace = tracing.request(req.method, req.get_header("traceparent"))

    async def process_response(
        self, req: Request, resp: Response, resource: Any, req_succeeded: bool
    ) -> None:
        trace = getattr(req.context, "trace", None)
        if trace is not None:
            status = resp.status if isinstance(resp.status, int) else int(str(resp.status)[:3])
            trace.end(req.method, req.uri_template, status)


class SecurityHeaders:
    """What OWASP's REST checklist asks of every JSON response; a page (the dashboard) sets its own.

    Strict-Transport-Security belongs to whatever terminates TLS in front of the api.
    """

    # Tokens and private messages never sit in a shared cache (no-store); push and the worker's
    # port send the same set.
    HEADERS = dict(SECURITY_HEADERS)

    async def process_response(
        self, req: Request, resp: Response, resource: Any, req_succeeded: bool
    ) -> None:
        for name, value in self.HEADERS.items():
            if resp.get_header(name) is None:
                resp.set_header(name, value)


class Lifespan:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self._deps.aclose()
