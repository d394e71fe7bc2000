"""A stand-in for Falcon's WebSocket, for push sessions run in process."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from falcon.errors import PayloadTypeError

from tests.support.protocol import check_frame


class FakeWebSocket:
    """Records what the session sends; `hold` blocks sends to mimic a client that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.close_reason: str | None = None
        self.accepted = False
        self.closed = False
        self.hold = asyncio.Event()
        self.hold.set()
        self._incoming: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.on_send: Any = None

    async def send_text(self, text: str) -> None:
        await self.hold.wait()
        self.sent.append(check_frame(orjson.loads(text)))
        if self.on_send is not None:
            await self.on_send(self.sent[-1])

    async def accept(self) -> None:
        self.accepted = True

    async def receive_text(self) -> str:
        incoming = await self._incoming.get()
        if isinstance(incoming, bytes):
            raise PayloadTypeError("Missing TEXT (0x01) payload")  # what Falcon raises for binary
        return incoming

    def client_sends(self, *frames: str | bytes) -> None:
        for frame in frames:
            self._incoming.put_nowait(frame)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed_with = code
        self.close_reason = reason
        self.closed = True


class Recorder:
    """A hub subscriber (push.hub.Subscriber) that records what it was offered and told."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.frames: list[str] = []
        self.restarted = asyncio.Event()
        self.deactivations = 0

    def offer(self, frame: str) -> None:
        self.frames.append(frame)

    def restart(self) -> None:
        self.restarted.set()

    def deactivated(self) -> None:
        self.deactivations += 1
