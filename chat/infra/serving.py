"""uvicorn as the web and push processes (and dev mode) run it.

- `Config`: the settings every server of ours shares. uvicorn's own proxy-header handling is off:
  by default it believes X-Forwarded-For from loopback and rewrites the peer address before the
  app sees it, so a local client (or a proxy on the host that passes the header on) could pick
  any address for the limits per address. TRUSTED_PROXIES, in `api/clientaddr.py`, is the one
  rule for that header. No `server: uvicorn` banner either: it only tells a scanner which CVEs
  to try.
- `HeaderDeadlineProtocol`: a connection must finish its request headers within
  HTTP_HEADER_TIMEOUT_SECONDS, or it is closed. uvicorn only times out an idle kept-alive
  connection, and stops even that as soon as one byte arrives: a client that trickles header
  lines (or sends nothing at all) would hold a socket, a file descriptor and a buffer forever.
- `QuietServer`: minus uvicorn's ten wake-ups a second. Its main loop sleeps 0.1 s between checks
  for a shutdown and the Date header's refresh: measured at 0.2 % of a core per process with
  nothing to do, the bulk of an idle deployment's CPU. Here the loop wakes once a second (the Date
  header has one-second resolution anyway) and at once on a shutdown signal.

The uvicorn internals these lean on (pyproject.toml holds uvicorn below its next minor version;
`tests/test_uvicorn_seam.py` pins each by behaviour, so an upgrade that changes one fails there):
`Server._serve` calling `main_loop()` after startup and `shutdown(sockets)` after it;
`Server.on_tick(counter)` refreshing `server_state.default_headers` (Date) when the counter is a
multiple of ten and returning True once `should_exit` is set; `Server.capture_signals` installing
`self.handle_exit` as the SIGINT/SIGTERM handler; `HttpToolsProtocol` as httptools' callbacks, so
`connection_made`, `on_message_begin`, `on_headers_complete` (before the app's task is created)
and `connection_lost` fire in that order, with `self.config`, `self.loop`, `self.transport` and
`self.cycle` (`response_complete`, `keep_alive`) as it sets them.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# What api/observe.py's SecurityHeaders puts on every api response; push and the worker's metrics
# port send the same on every response of theirs. Without a Server header.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
TICK_SECONDS = 1.0
# uvicorn refreshes the Date header on ticks whose counter is a multiple of ten: every tick here.
_COUNTER_STEP = 10


class Config(uvicorn.Config):
    """`uvicorn.Config` with what every server of ours must have; `options` are uvicorn's others."""

    def __init__(self, app: Any, *, header_timeout: float, **options: Any) -> None:
        super().__init__(
            app,
            http=HeaderDeadlineProtocol,
            proxy_headers=False,
            server_header=False,
            # uvicorn's own logging config gives its loggers handlers that bypass the root's
            # (Redact, LOG_FORMAT): without one they propagate there (chat.infra.process).
            # Its start-up lines name the bind address (0.0.0.0), not where clients connect: each
            # process logs that itself; uvicorn says only what went wrong.
            **{"log_config": None, "log_level": "warning", **options},
        )
        self.header_timeout = header_timeout


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline on each request's headers.

    The deadline starts when the connection opens, and for a later request on a kept-alive
    connection when its first byte arrives (before that, uvicorn's keep-alive timeout applies);
    it ends when the headers are complete, so a slow upload or a WebSocket upgraded from the
    request is not cut short. Past it the connection is closed without an answer, as nginx's
    client_header_timeout does; a response still being sent is finished first.
    """

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            timeout = getattr(self.config, "header_timeout", None)
            if timeout is not None:
                self._head_deadline = self.loop.call_later(timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            # A pipelined request that stalls behind one being answered: close after the answer.
            self.cycle.keep_alive = False


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._exit is not None:
            # A signal handler may run in the middle of the loop's own work: threadsafe is the safe way in.
            self._loop.call_soon_threadsafe(self._exit.set)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + _COUNTER_STEP) % 864_000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._exit.wait()
