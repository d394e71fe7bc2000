"""`python -m workers`: run one worker process (the Procfile's `worker` line)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from chat.infra import durability, metrics, serving
from chat.infra.process import configure_logging, settings_or_exit, settle_gc, use_uvloop
from workers.main import create_worker

log = logging.getLogger("workers")

# How many ports from the first one a worker tries before it goes without metrics: room for every
# worker one host runs, well short of the next process type's ports under honcho (100 apart).
METRICS_PORT_TRIES = 50


class MetricsHandler(BaseHTTPRequestHandler):
    """`GET /metrics` (the worker's own metrics) and `GET /healthz`; 404 for any other path.

    prometheus_client's server answered every path, and every method it knew, with the metrics.
    Answers carry the api's security headers and no Server banner, as the api's and push's do.
    """

    registry: ClassVar[CollectorRegistry]  # set by start_metrics_server
    # A client that stops sending (or reading) mid-request is dropped after this long idle.
    timeout = 10

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def do_POST(self) -> None:
        self._answer(HTTPStatus.METHOD_NOT_ALLOWED, "Only GET and HEAD are served here.", body=True)

    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_POST

    def _route(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            encode, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(HTTPStatus.OK, content_type, encode(self.registry), body=body)
        elif path == "/healthz":
            self._send(HTTPStatus.OK, "application/json; charset=utf-8", b'{"status":"ok"}', body=body)
        else:
            self._answer(HTTPStatus.NOT_FOUND, "The worker serves /metrics and /healthz only.", body=body)

    def _answer(self, status: HTTPStatus, detail: str, *, body: bool) -> None:
        problem = {"type": "about:blank", "title": status.phrase, "status": status.value, "detail": detail}
        allow = (("Allow", "GET, HEAD"),) if status is HTTPStatus.METHOD_NOT_ALLOWED else ()
        self._send(status, "application/problem+json", orjson.dumps(problem), body=body, extra=allow)

    def _send(
        self,
        status: HTTPStatus,
        content_type: str,
        data: bytes,
        *,
        body: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "server":  # send_response always adds one; it only helps a scanner
            super().send_header(keyword, value)

    def end_headers(self) -> None:
        for name, value in serving.SECURITY_HEADERS:  # also on http.server's own errors (400, 414, 501)
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # a line per scrape would only be noise


def start_metrics_server(port: int, registry: CollectorRegistry) -> ThreadingHTTPServer:
    """Serve `registry` on `port` (all interfaces) from a daemon thread, as prometheus_client's
    start_http_server did: a worker busy with jobs still answers its scrapes."""
    handler = type("WorkerMetricsHandler", (MetricsHandler,), {"registry": registry})
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)  # noqa: S104 - scraped from elsewhere
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def serve_metrics(first: int, registry: CollectorRegistry) -> int | None:
    """Serve /metrics on the first free port from `first` on; that port, or None if none was free.

    Several workers on one host may be given one port (`WORKER_METRICS_PORT=9105 honcho start -c
    worker=3 worker`): each takes the next free one, and none dies because another got there first.
    """
    last = min(first + METRICS_PORT_TRIES, 65536) - 1
    for port in range(first, last + 1):
        try:
            # The worker has no HTTP api of its own; metrics get their own small server.
            start_metrics_server(port, registry)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise  # not a busy port but a setting to fix (a privileged port, say): say so at once
            continue
        skipped = "" if port == first else f" (the first free port from {first})"
        log.info("worker metrics on http://0.0.0.0:%d/metrics%s", port, skipped)
        return port
    log.warning("ports %d-%d are all taken: this worker serves no metrics", first, last)
    return None


def main() -> None:
    configure_logging()
    settings = settings_or_exit()
    durability.report_at_start(settings, log)
    port = settings.worker_metrics_port or (int(os.environ["PORT"]) if os.environ.get("PORT") else None)
    if port:
        serve_metrics(port, metrics.WORKER_METRICS)
    use_uvloop()
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = create_worker(settings)
    settle_gc()
    worker.run()


if __name__ == "__main__":
    main()
