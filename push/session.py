"""One WebSocket connection, from admission to close.

The seam between replay and live is the delicate part: the user's channel is subscribed first
and live frames are buffered; then the stream is replayed after the client's last_event_id; then
buffered frames newer than the last replayed one are flushed, and the socket goes live. Nothing is
lost between the two and nothing is sent twice.

Every way out ends in a close code of the contract with a reason (`frames.Close`): a Redis failure
is 1011 and says to back off, never a normal closure (1000) the client would not retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import orjson
from falcon import WebSocketDisconnected
from falcon.asgi import WebSocket
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from chat.domain import ratelimit
from chat.infra import metrics
from chat.infra.outage import Outage
from chat.realtime import presence
from chat.settings import Settings
from push import frames, replay
from push.frame_limit import FrameBudget
from push.hub import Hub

log = logging.getLogger("push.session")

T = TypeVar("T")

REPLAY_CHUNK = 500
# The ASGI extension (in the connection's scope) through which push.server offers send_now.
SEND_NOW_EXTENSION = "headless.push.send_now"
PRESENCE_CHUNK = 1000  # sockets renewed per round trip
# A Redis that stops answering must not hold a handshake (or a replay) open: past this the client
# gets 1011 and backs off. A healthy round trip takes well under a millisecond.
REDIS_TIMEOUT = 5.0
# A slot frees whenever one of the user's other sockets closes, which nobody can predict: this is
# the back-off a client over the cap is told to take, long enough to stop a reconnect loop.
SOCKETS_RETRY_AFTER = 5
CLOSE_TIMEOUT = 2.0


class Session:
    # Slots: no instance dict, a few hundred bytes less on each of 10,000 sessions.
    __slots__ = (
        "__weakref__",
        "_accepted",
        "_budget",
        "_buffer",
        "_closing",
        "_pending",
        "_send_now",
        "_sender",
        "_settings",
        "connection_id",
        "expires_at",
        "present",
        "user_id",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        user_id: uuid.UUID,
        expires_at: datetime,
        settings: Settings,
        send_now: Callable[[str], bool] | None = None,
    ) -> None:
        self.ws = ws
        self.user_id = str(user_id)
        self.connection_id = uuid.uuid4().hex
        self.expires_at = expires_at
        self._settings = settings
        # Frames waiting for the socket, sent in order by a task that exists only while there are
        # some: an idle socket holds no sender, nor a deque (at 10,000 sockets a process, every
        # object counts: an empty deque is 700 bytes).
        self._pending: deque[str] | None = None
        self._sender: asyncio.Task[None] | None = None
        # The server's way to write a frame without awaiting (PushProtocol.send_text_now), when it
        # offers one: then a frame to a socket with nothing waiting costs no task.
        self._send_now = send_now
        self._buffer: list[str] | None = []  # live frames held back while replaying
        self._closing: asyncio.Future[frames.Close] = asyncio.get_running_loop().create_future()
        self._accepted = False
        # Live and announced in presence: what Connections.keep_present renews.
        self.present = False
        limit = ratelimit.parse(settings.rate_limit_client_frames)
        self._budget = FrameBudget(limit) if limit is not None else None

    # Called by the hub for every frame published to this user.
    def offer(self, frame: str) -> None:
        if self._closing.done():
            return
        if self._buffer is not None:
            if len(self._buffer) >= self._settings.push_send_queue_size:
                self.close_with(frames.TOO_SLOW)
            else:
                self._buffer.append(frame)
            return
        if self._sender is None and self._send_now is not None and self._send_now(frame):
            metrics.WS_FRAMES_SENT.inc()
            return
        if self._pending is None:
            self._pending = deque()
        elif len(self._pending) >= self._settings.push_send_queue_size:
            # The client stopped reading; holding more would let one socket eat the process.
            self.close_with(frames.TOO_SLOW)
            return
        self._pending.append(frame)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_pending())
            self._sender.add_done_callback(self._task_done)

    def restart(self) -> None:
        self.close_with(frames.RESTARTING)

    # Called by the hub when the user was deactivated or erased (chat.realtime.usercontrol).
    def deactivated(self) -> None:
        self.close_with(frames.DEACTIVATED)

    def close_with(self, close: frames.Close) -> None:
        if not self._closing.done():
            self._closing.set_result(close)

    async def run(
        self, redis: Redis, hub: Hub, last_event_id: str | None, rooms: list[str] | None = None
    ) -> None:
        """Admit, accept, replay, relay; returns once the socket is closed. `rooms`: the user's
        rooms (`chat.realtime.roomlist`), None when Postgres could not tell them."""
        tasks: list[asyncio.Task[None]] = []
        close = frames.SERVER_ERROR  # whatever goes wrong before a better answer is known
        # Until the claim answers, the connection may be recorded: a timed-out script can still run.
        present = True
        try:
            present = await _bounded(
                presence.claim(
                    redis,
                    self.user_id,
                    self.connection_id,
                    ttl_seconds=self._settings.presence_ttl_seconds,
                    cap=self._settings.rate_limit_sockets_per_user,
                )
            )
            await self.ws.accept()
            self._accepted = True
            if not present:
                close = frames.rate_limited("sockets", SOCKETS_RETRY_AFTER)
                return
            await _bounded(hub.join(self, rooms if rooms is not None else None))
            await self._start(redis, last_event_id, rooms or [])
            # One task a socket (and a sender while frames wait). Presence is renewed, and expired
            # tokens closed, for all of the process's sockets at once (Connections).
            tasks = [asyncio.create_task(self._receive_loop())]
            for task in tasks:
                task.add_done_callback(self._task_done)
            self.present = True
            close = await self._closing
        except WebSocketDisconnected:  # before OSError below: it is a ConnectionError
            close = frames.GONE
        except (RedisError, RedisClusterException, OSError) as exc:  # TimeoutError is an OSError
            log.warning("closing a socket with 1011: Redis failed (%s: %s)", type(exc).__name__, exc)
        except Exception:
            log.exception("closing a socket with 1011")
        finally:
            self.present = False  # before the leave below: no renewal may bring this one back
            if self._sender is not None:
                tasks.append(self._sender)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await _bounded(hub.leave(self))
            if present:
                with contextlib.suppress(Exception):
                    await _bounded(presence.leave(redis, self.user_id, self.connection_id))
            await self._close(close)
            metrics.WS_CLOSED.labels(str(close.code)).inc()

    async def _close(self, close: frames.Close) -> None:
        if close is frames.GONE:
            return
        with contextlib.suppress(Exception):
            if not self._accepted:
                # A close before accept reaches the client as a bare HTTP 403, with no code to act on.
                await self.ws.accept()
                self._accepted = True
            if not self.ws.closed:
                await asyncio.wait_for(self.ws.close(close.code, close.reason), CLOSE_TIMEOUT)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # The loops end only by closing the session; one that raised is a bug, and must not leave
        # a socket open that no longer sends or reads.
        if not task.cancelled() and task.exception() is not None:
            log.error("a session loop failed; closing with 1011", exc_info=task.exception())
            self.close_with(frames.SERVER_ERROR)

    async def _start(self, redis: Redis, last_event_id: str | None, rooms: list[str]) -> None:
        done = await replay.replay(
            redis,
            self.ws.send_text,
            _bounded,
            self.user_id,
            rooms,
            last_event_id,
            self._settings.resume_overlap,
        )
        await self.ws.send_text(frames.ready(self.user_id, self.connection_id, done.count, done.newest))
        metrics.WS_FRAMES_SENT.inc(done.count + 1)
        # Go live: what arrived during the replay and was not in it goes first, in order.
        buffered, self._buffer = self._buffer or [], None
        for frame in buffered:
            if done.is_new(frames.event_id_of(frame)):
                self.offer(frame)

    async def _send_pending(self) -> None:
        try:
            while self._pending:
                try:
                    await self.ws.send_text(self._pending.popleft())
                except WebSocketDisconnected:
                    self.close_with(frames.GONE)
                    return
                metrics.WS_FRAMES_SENT.inc()
        finally:
            self._sender = None
            if not self._pending:
                self._pending = None  # drained: the socket is idle again, and holds no deque

    async def _receive_loop(self) -> None:
        while True:
            raw: str | None = None
            try:
                raw = await self.ws.receive_text()
            except WebSocketDisconnected:
                self.close_with(frames.GONE)
                return
            except (TypeError, ValueError):  # a binary frame
                pass
            if self._budget is not None and (wait := self._budget.take()):
                # Answering a flood would only feed it: close, saying when to come back.
                self.close_with(frames.rate_limited("frames", wait))
                return
            if raw is None:
                self.offer(frames.error("Frames must be JSON text."))
                continue
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.offer(frames.error("Frames must be JSON objects."))
                continue
            if isinstance(message, dict) and message.get("type") == "ping":
                self.offer(frames.PONG)
            else:
                self.offer(frames.error('Unknown frame; the only client frame is {"type": "ping"}.'))


async def _bounded(call: Awaitable[T]) -> T:
    async with asyncio.timeout(REDIS_TIMEOUT):
        return await call


class Expiries:
    """Closes each session with 4401 once its token has expired, on one timer for the process
    rather than one a socket (650 bytes each: the timer, its bound method and its arguments).

    Sessions are kept by the whole second their token expires in (a JWT's `exp` is in seconds),
    and the timer is armed for the earliest of those seconds.
    """

    def __init__(self) -> None:
        self._due: dict[int, set[Session]] = {}
        self._seconds: list[int] = []  # a heap of _due's keys, each once
        self._timer: asyncio.TimerHandle | None = None
        self._timer_for: int | None = None

    def add(self, session: Session) -> None:
        second = _second_of(session.expires_at)
        sessions = self._due.get(second)
        if sessions is None:
            sessions = self._due[second] = set()
            heapq.heappush(self._seconds, second)
        sessions.add(session)
        self._arm()

    def discard(self, session: Session) -> None:
        # An emptied second stays until it is due: dropped here, a client reconnecting with the
        # same token would push that second onto the heap again on every connection.
        sessions = self._due.get(_second_of(session.expires_at))
        if sessions is not None:
            sessions.discard(session)

    def _arm(self) -> None:
        first = self._seconds[0]
        if self._timer_for == first:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, first - time.time()), self._expire)
        self._timer_for = first

    def _expire(self) -> None:
        # The second the timer was armed for is due, even if the wall clock lags the loop's a little.
        now = max(time.time(), self._timer_for or 0)
        self._timer = self._timer_for = None
        while self._seconds and self._seconds[0] <= now:
            for session in self._due.pop(heapq.heappop(self._seconds)):
                session.close_with(frames.TOKEN_INVALID)
        if self._seconds:
            self._arm()


def _second_of(moment: datetime) -> int:
    return math.ceil(moment.timestamp())


class Connections:
    """The WebSocket sessions open on this process (no database sessions): a shutdown closes
    each with 1012 and says why, one task renews the presence of them all, and one timer closes
    those whose token expired."""

    def __init__(self) -> None:
        self._open: set[Session] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._keeper: asyncio.Task[None] | None = None
        self._expiries = Expiries()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, session: Session, redis: Redis, ttl_seconds: int, outage: Outage) -> None:
        self._open.add(session)
        self._expiries.add(session)
        self._empty.clear()
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self.keep_present(redis, ttl_seconds, outage))

    async def keep_present(self, redis: Redis, ttl_seconds: int, outage: Outage) -> None:
        """Every third of the TTL, renew every live socket's presence, a chunk per round trip;
        ends when the process has no socket left (the next one starts it again)."""
        while self._open:
            await asyncio.sleep(ttl_seconds / 3)
            live = [(s.user_id, s.connection_id) for s in self._open if s.present]
            try:
                for start in range(0, len(live), PRESENCE_CHUNK):
                    chunk = live[start : start + PRESENCE_CHUNK]
                    await _bounded(presence.touch_many(redis, chunk, ttl_seconds))
            except Exception as exc:  # presence goes stale meanwhile; the sockets themselves are fine
                outage.down(exc)
            else:
                outage.up()

    def discard(self, session: Session) -> None:
        self._open.discard(session)
        self._expiries.discard(session)
        if not self._open:
            self._empty.set()

    async def restart_all(self, grace: float) -> None:
        """Close every session with 1012; wait up to `grace` seconds for their close frames to go."""
        for session in list(self._open):
            session.restart()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), grace)
