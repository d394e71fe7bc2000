"""The load client: senders that POST, devices that hold a WebSocket, and one tracker of both.

Latency is from just before a POST to the frame's arrival at a device. Each message body is
unique, so a frame names the send it answers; a fan-out frame counts once per device.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.rawsocket import RawSocket
from tests.support.chatload import conversation, register

User = dict[str, Any]


@dataclass
class Tracker:
    sent_at: dict[str, float] = field(default_factory=dict)
    post_s: list[float] = field(default_factory=list)
    delivery_s: list[float] = field(default_factory=list)
    accepted: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    last_delivery: float = 0.0
    _goal: tuple[int, asyncio.Event] | None = None

    def delivered(self, body: str, now: float) -> None:
        sent = self.sent_at.get(body)
        if sent is None:  # a frame from an earlier scenario's stragglers
            return
        self.delivery_s.append(now - sent)
        self.last_delivery = now
        if self._goal is not None and len(self.delivery_s) >= self._goal[0]:
            self._goal[1].set()

    async def wait_delivered(self, count: int, within: float) -> bool:
        """Until `count` frames have arrived; False if `within` seconds passed first."""
        done = asyncio.Event()
        self._goal = (count, done)
        if len(self.delivery_s) >= count:
            return True
        try:
            await asyncio.wait_for(done.wait(), within)
        except TimeoutError:
            return False
        finally:
            self._goal = None
        return True


class Client:
    """One aiohttp session for the HTTP traffic, and devices read by bench.rawsocket: on a two-core
    box a heavier client would be measured instead of the server."""

    def __init__(self, web_url: str, ws_url: str) -> None:
        self.web_url = web_url
        self.ws_url = ws_url
        self.push_metrics_url = "http" + ws_url.removeprefix("ws").removesuffix("/ws") + "/metrics"
        # Idle connections are let go before uvicorn's 5 s keep-alive ends them: a request must
        # never go out on a connection the server is closing.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
        self.http = aiohttp.ClientSession(base_url=web_url, connector=connector)
        self.tracker = Tracker()
        self._sockets: list[RawSocket] = []
        # Sockets the server closed, by close code: a frame never sent is lost, not slow.
        self.closed: Counter[int | None] = Counter()

    async def users(self, count: int, concurrency: int = 16) -> list[User]:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> User:
            async with gate:
                return await register(self.http, "b")

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def conversation(self, creator: User, others: list[User], title: str | None = None) -> str:
        return await conversation(self.http, creator, others, title)

    async def connect(self, user: User) -> None:
        """Open one device's socket and read it until the scenario closes it."""
        socket, ready = await RawSocket.connect(
            f"{self.ws_url}?token={user['token']}", self._frame, time.perf_counter
        )
        # Live delivery begins with the ready frame (docs/api.md): a message sent before it reaches
        # this device only through a resume, which a bench device never does.
        if b'"ready"' not in ready:
            raise RuntimeError(f"expected the ready frame, got {ready!r}")
        self._sockets.append(socket)
        socket.closed.add_done_callback(lambda closed: self._count_close(socket, closed))

    def _frame(self, payload: bytes, now: float) -> None:
        if b'"message.created"' not in payload:
            return
        # Bench bodies hold no quote: the body is read without decoding the whole frame.
        start = payload.find(b'"body":"') + 8
        # The tracker of the moment: a socket outlives the scenario that opened it.
        self.tracker.delivered(payload[start : payload.find(b'"', start)].decode(), now)

    def _count_close(self, socket: RawSocket, closed: asyncio.Future[int | None]) -> None:
        if not socket.closed_by_client and not closed.cancelled():
            self.closed[closed.result()] += 1

    async def connect_all(self, users: list[User], concurrency: int = 100) -> float:
        """Open a socket per entry (a user twice is two devices); returns handshakes per second."""
        gate = asyncio.Semaphore(concurrency)

        async def one(user: User) -> None:
            async with gate:
                await self.connect(user)

        started = time.perf_counter()
        await asyncio.gather(*(one(u) for u in users))
        return len(users) / (time.perf_counter() - started)

    async def push_connections(self) -> int:
        """The sockets the push process holds open, from its own metrics."""
        async with self.http.get(self.push_metrics_url) as answer:
            for line in (await answer.text()).splitlines():
                if line.startswith("chat_ws_connections "):
                    return int(float(line.split()[1]))
        return 0

    async def disconnect_all(self) -> None:
        for socket in self._sockets:
            socket.close()
        self._sockets.clear()
        # The next scenario starts on an empty push process, not one still closing these.
        deadline = time.perf_counter() + 60
        while await self.push_connections() and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # the count is in another process: asking again is the only way

    async def send(self, user: User, conversation_id: str, body: str) -> None:
        tracker = self.tracker
        started = time.perf_counter()
        tracker.sent_at[body] = started
        url = f"/api/v1/conversations/{conversation_id}/messages"
        async with self.http.post(url, json={"body": body}, headers=user["headers"]) as answer:
            await answer.read()
            if answer.status == 202:
                tracker.accepted += 1
                tracker.post_s.append(time.perf_counter() - started)
            else:
                tracker.refused[answer.status] += 1
                del tracker.sent_at[body]

    def reset(self) -> Tracker:
        """A fresh tracker for the next scenario; returns the last one."""
        last, self.tracker = self.tracker, Tracker()
        return last

    async def close(self) -> None:
        await self.disconnect_all()
        await self.http.close()
