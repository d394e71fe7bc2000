"""Serve the push app with uvicorn on a socket of our own, tuned for backpressure.

The uvicorn internals this leans on, beyond those of `chat/infra/serving.py` (pyproject.toml holds
uvicorn below its next minor version; `tests/test_uvicorn_seam.py` pins them by behaviour):
`WebSocketsSansIOProtocol.__init__(config, server_state, app_state, _loop)` building `self.conn`
(a websockets `ServerProtocol`, replaced here by `Handshake`); `handle_connect(event)` running
before the app with `self.scope` built; `send_receive_event_to_app()` called once per complete
message with `self.frames` and `self.curr_msg_data_type` ("text") set, and
`handle_parser_exception()` closing after `self.conn.fail`; `send(message)`, and the attributes
`handshake_complete`, `writable`, `disconnected`, `close_sent`, `initial_response`,
`transport` and `loop` as that protocol keeps them; `Server.servers` and `Server.shutdown`.
"""

from __future__ import annotations

import asyncio
import functools
import http
import socket
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import InvalidState
from websockets.frames import CloseCode
from websockets.http11 import Response
from websockets.server import ServerProtocol

from chat.infra import serving
from chat.settings import Settings
from push.app import create_app
from push.session import SEND_NOW_EXTENSION, Connections

MAX_CLIENT_FRAME = 4096  # larger client frames are closed with 1009 by the websockets layer
# How long a shutdown waits for the sockets' own 1012 close frames before uvicorn's bare ones.
SHUTDOWN_GRACE = 2.0

T = TypeVar("T")


def listen(host: str, port: int, sndbuf: int) -> socket.socket:
    """A listening socket whose small send buffer is inherited by every accepted connection.

    Left to autotuning, the kernel would buffer megabytes for a client that stops reading, and
    the bounded send queue (close with 4408) would only notice far too late.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Inbox(Generic[T]):
    """What uvicorn's protocol uses of the asyncio.Queue it keeps per socket (`put_nowait`, `get`,
    `empty`), in the same order and with the same wake-ups, holding nothing while idle.

    An asyncio.Queue allocates three deques and an Event (a fourth) up front, 2.9 KB for a queue
    that holds at most one message at a time (uvicorn stops reading until the app takes it): at
    10,000 sockets, 29 MB.
    """

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getters: list[asyncio.Future[None]] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._wake_next()

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> T:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                # As asyncio.Queue.get: a getter woken and then cancelled passes its turn on.
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_next()
                raise
        return self._items.pop(0)

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not self._getters:
            self._getters = None


class Flag:
    """asyncio.Event's contract (`is_set`, `set`, `clear`, `wait`) for uvicorn's per-socket
    `writable`, without the deque of waiters an Event allocates up front (700 bytes a socket,
    awaited only while the socket's send buffer is full)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            for waiter in self._waiters or ():
                if not waiter.done():
                    waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)
            if not self._waiters:
                self._waiters = None


@functools.cache
def _as_text(headers: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[str, str], ...]:
    # One decoded copy per server, not one per connection (a kilobyte each).
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)


class Handshake(ServerProtocol):
    """websockets' server side, whose every HTTP answer but the 101 carries `headers` as well.

    A refused upgrade (a bad key or version 400/426, a path the app refuses 403, a 500) is
    answered here, by websockets, not by the app or uvicorn's HTTP protocol.
    """

    def __init__(self, *args: Any, headers: Sequence[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers = headers

    def reject(self, status: http.HTTPStatus | int, text: str) -> Response:
        return self._with_headers(super().reject(status, text))

    def send_response(self, response: Response) -> None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            self._with_headers(response)
        super().send_response(response)

    def _with_headers(self, response: Response) -> Response:
        for name, value in self._headers:
            if name not in response.headers:
                response.headers[name] = value
        return response


class PushProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (timers instead of three tasks a socket, about half
    the memory and CPU of the legacy one), with these changes:

    - Frames sent in one turn of the event loop go out in one write. A session drains its queue
      without yielding, so a socket with ten frames waiting makes one system call, not ten: under
      a fan-out burst the write per frame was the push process's largest cost. Everything the
      protocol writes (pings, pongs, the close frame) goes through the same websockets buffer, so
      the order on the wire is the order of the sends.
    - A close frame never waits for the send buffer to drain. A client that stopped reading is
      closed with 4408 precisely because its buffer is full; the close frame goes after what is
      buffered, so a client that reads again learns why, and nothing is sent after it.
    - A refused upgrade carries the security headers (`Handshake`).
    - A text message that is not UTF-8 fails the connection with 1007, as RFC 6455 says, and
      quietly: uvicorn logged each one as an ERROR with a traceback, so any client could fill
      the log with what is its own mistake.
    - Less memory a socket, which is most of what a push process holds (docs/benchmarks.md, "Push
      memory"): a receive queue and a `writable` flag that allocate nothing while idle (`Inbox`,
      `Flag`); the handshake's parsed request and response (two sets of headers, 5 KB) let go
      once the 101 is sent; and uvicorn's own attributes in slots. It sets some 40 on each
      socket, past the 30 a class's instances can share one key table for, so each socket had a
      dict of its own (1.5 KB); slots named here take those assignments instead.
    """

    # Every attribute uvicorn's protocol sets (websockets_sansio_impl.py, `self.<name> =`), and
    # ours. One it adds in a later version still works, in the instance dict this avoids
    # (tests/push/test_memory.py says which).
    __slots__ = (
        "_flush_due",
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._flush_due = False
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's own, as it built it, but answering with the headers uvicorn adds to HTTP.
        self.conn = Handshake(
            extensions=self.conn.available_extensions,
            max_size=(self.conn.max_message_size, self.conn.max_fragment_size),
            logger=self.conn.logger,
            headers=_as_text(tuple(config.encoded_headers)),
        )
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent and not _utf8(self.frames):
            self.frames = []
            self.conn.fail(CloseCode.INVALID_DATA, "invalid UTF-8")
            self.handle_parser_exception()  # tells the app, writes the close frame, closes
            return
        super().send_receive_event_to_app()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_NOW_EXTENSION] = {"send": self.send_text_now}

    def send_text_now(self, text: str) -> bool:
        """Queue a text frame for this loop turn's write, without a coroutine; False when the
        socket cannot take it now (its buffer is full, it is closing) and the caller must await.

        A frame fanned out to a socket with nothing waiting goes this way: no task, no await.
        """
        if not (self.handshake_complete and self.writable.is_set()) or self.disconnected or self.close_sent:
            return False
        try:
            self.conn.send_text(text.encode())
        except InvalidState:
            return False
        self._flush_soon()
        return True

    async def send(self, message: Any) -> None:
        if (
            message["type"] == "websocket.send"
            and self.handshake_complete
            and not self.close_sent
            and self.initial_response is None
        ):
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            try:
                data = message.get("bytes")
                if data is not None:
                    self.conn.send_binary(data)
                else:
                    self.conn.send_text(message["text"].encode())
            except InvalidState as exc:
                raise ClientDisconnected() from exc
            self._flush_soon()
            return
        if message["type"] == "websocket.close" and self.handshake_complete:
            self.writable.set()
        accepting = message["type"] == "websocket.accept" and not self.handshake_complete
        await super().send(message)
        if accepting and self.handshake_complete:
            self._release_handshake()

    def _release_handshake(self) -> None:
        """Let go of what only the handshake needed, once its 101 is sent."""
        # websockets' parser holds the request in a local for as long as the connection lives:
        # its headers are emptied, since the request itself cannot be let go.
        self.request.headers.clear()
        del self.request, self.response
        # The scope's copy of the headers too: Falcon copied them into its Request before the
        # app ran (falcon.asgi.Request.__init__), and reads only its own copy.
        self.scope["headers"] = []

    def _flush_soon(self) -> None:
        """Write what this loop turn sent, once, at its end."""
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if not self.transport.is_closing():
            data = self.conn.data_to_send()
            if data:
                self.transport.write(b"".join(data))


def _utf8(parts: list[bytes]) -> bool:
    try:
        b"".join(parts).decode()
    except UnicodeDecodeError:
        return False
    return True


class PushServer(serving.QuietServer):
    """uvicorn, except that a shutdown closes every socket with 1012 *and a reason*.

    uvicorn's own shutdown fails each WebSocket with a bare 1012 before the app hears of it. So:
    stop accepting, close our sessions ourselves (saying "server restarting; reconnect"), and let
    uvicorn finish whatever is left.
    """

    def __init__(self, config: uvicorn.Config, connections: Connections) -> None:
        super().__init__(config)
        self._connections = connections

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await self._connections.restart_all(grace=SHUTDOWN_GRACE)
        await super().shutdown(sockets)


def build_server(settings: Settings, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    connections = Connections()
    config = serving.Config(
        create_app(settings, connections),
        header_timeout=settings.http_header_timeout_seconds,
        ws=PushProtocol,
        ws_max_size=MAX_CLIENT_FRAME,
        ws_ping_interval=settings.push_ping_interval_seconds,
        ws_ping_timeout=settings.push_ping_interval_seconds,
        # Compressing would cost CPU per socket for every frame and hide a stalled reader longer.
        ws_per_message_deflate=False,
        # The access log would print the query string, and with it the token.
        access_log=False,
        # The api's security headers on every answer: uvicorn's (HTTP), Handshake's (refused upgrades).
        headers=list(serving.SECURITY_HEADERS),
        timeout_graceful_shutdown=5,
        log_level="warning",
        lifespan="on",
    )
    return PushServer(config, connections), listen(host, port, settings.push_socket_sndbuf)
