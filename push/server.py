"""Serve the push app with uvicorn on a socket of our own, tuned for backpressure."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from chat import serving
from chat.settings import Settings
from push.app import create_app
from push.session import SEND_NOW_EXTENSION, Sessions

MAX_CLIENT_FRAME = 4096  # larger client frames are closed with 1009 by the websockets layer
# How long a shutdown waits for the sockets' own 1012 close frames before uvicorn's bare ones.
SHUTDOWN_GRACE = 2.0


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


class PushProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol (timers instead of three tasks a socket, about half
    the memory and CPU of the legacy one), with two changes:

    - Frames sent in one turn of the event loop go out in one write. A session drains its queue
      without yielding, so a socket with ten frames waiting makes one system call, not ten: under
      a fan-out burst the write per frame was the push process's largest cost. Everything the
      protocol writes (pings, pongs, the close frame) goes through the same websockets buffer, so
      the order on the wire is the order of the sends.
    - A close frame never waits for the send buffer to drain. A client that stopped reading is
      closed with 4408 precisely because its buffer is full; the close frame goes after what is
      buffered, so a client that reads again learns why, and nothing is sent after it.
    """

    _flush_due = False

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
        await super().send(message)

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


class PushServer(serving.QuietServer):
    """uvicorn, except that a shutdown closes every socket with 1012 *and a reason*.

    uvicorn's own shutdown fails each WebSocket with a bare 1012 before the app hears of it. So:
    stop accepting, close our sessions ourselves (saying "server restarting; reconnect"), and let
    uvicorn finish whatever is left.
    """

    def __init__(self, config: uvicorn.Config, sessions: Sessions) -> None:
        super().__init__(config)
        self._sessions = sessions

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await self._sessions.restart_all(grace=SHUTDOWN_GRACE)
        await super().shutdown(sockets)


def build_server(settings: Settings, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    sessions = Sessions()
    config = serving.Config(
        create_app(settings, sessions),
        header_timeout=settings.http_header_timeout_seconds,
        ws=PushProtocol,
        ws_max_size=MAX_CLIENT_FRAME,
        ws_ping_interval=settings.push_ping_interval_seconds,
        ws_ping_timeout=settings.push_ping_interval_seconds,
        # Compressing would cost CPU per socket for every frame and hide a stalled reader longer.
        ws_per_message_deflate=False,
        # The access log would print the query string, and with it the token.
        access_log=False,
        timeout_graceful_shutdown=5,
        log_level="warning",
        lifespan="on",
    )
    return PushServer(config, sessions), listen(host, port, settings.push_socket_sndbuf)
