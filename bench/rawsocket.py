"""A bench device's WebSocket, read by an asyncio Protocol: frames are parsed in the callback that
receives the bytes, with no task woken per frame.

On this two-core box the bench's client shares the cores with every process it measures. Read
through aiohttp (a reader task per socket, woken for every frame), the client spent 10.7 µs a frame
against the product's 6.9 (docs/benchmarks.md), and the fan-out figures measured the client. This
reader speaks just what a device needs: the upgrade, unmasked text frames from the server, pongs to
its pings, and its close code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

OnText = Callable[[bytes, float], None]
_PONG = 0xA
_CLOSE = 0x8
_PING = 0x9
_TEXT = 0x1


class RawSocket(asyncio.Protocol):
    def __init__(self, on_text: OnText, clock: Callable[[], float]) -> None:
        self._on_text = on_text
        self._clock = clock
        self._buffer = b""
        self._upgraded = False
        self._transport: asyncio.Transport | None = None
        self.closed_by_client = False
        self.opened: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()  # the first frame
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, url: str, on_text: OnText, clock: Callable[[], float]) -> tuple[RawSocket, bytes]:
        """Open `url` (ws://host:port/path?query); returns the socket and its first text frame."""
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, socket = await loop.create_connection(
            lambda: cls(on_text, clock), parts.hostname or "127.0.0.1", parts.port or 80
        )
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        socket._write(
            (
                f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        first = await socket.opened
        return socket, first

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if b" 101 " not in buffer[: buffer.find(b"\r\n")]:
                self._fail(RuntimeError(f"upgrade refused: {buffer[:200]!r}"))
                return
            self._upgraded = True
            buffer = buffer[end + 4 :]
        now = self._clock()
        at, size = 0, len(buffer)
        while size - at >= 2:
            opcode, length = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
            head = 2
            if length == 126:
                if size - at < 4:
                    break
                length, head = struct.unpack_from(">H", buffer, at + 2)[0], 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = struct.unpack_from(">Q", buffer, at + 2)[0], 10
            if size - at < head + length:
                break
            payload = buffer[at + head : at + head + length]
            at += head + length
            if opcode == _TEXT:
                if not self.opened.done():
                    self.opened.set_result(payload)
                else:
                    self._on_text(payload, now)
            elif opcode == _PING:
                self._send(_PONG, payload)
            elif opcode == _CLOSE:
                code = struct.unpack_from(">H", payload)[0] if len(payload) >= 2 else None
                self._finish(code)
                return
        self._buffer = buffer[at:]

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(None)

    def close(self) -> None:
        self.closed_by_client = True
        if self._transport is not None and not self._transport.is_closing():
            self._send(_CLOSE, struct.pack(">H", 1000))
            self._transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        # A client's frames are masked (RFC 6455 5.3); a pong or a close is at most 125 bytes.
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _finish(self, code: int | None) -> None:
        if not self.closed.done():
            self.closed.set_result(code)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the first frame ({code})"))
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self._transport is not None:
            self._transport.close()
