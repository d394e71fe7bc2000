"""One Redis pub/sub connection per push process, multiplexed over the users connected here.

A user's channel is subscribed when their first local socket opens and dropped when the last one
closes, so adding push processes does not multiply traffic. Each published frame arrives as
ready-to-send JSON and is decoded to text once, then offered to every local socket of that user.
An order on the same channel (`chat.realtime.usercontrol`: the user was deactivated) is never
offered as a frame: it closes every local socket of that user.

On a Redis Cluster events are published with SPUBLISH, and a user's channel is subscribed with
SSUBSCRIBE on the master of its slot (`push.sharded`: one connection a master). A node that is
lost, or that gives up a slot, costs only the sockets of the users whose channels it carried: they
are restarted, as every socket is on one Redis when its pub/sub connection breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from chat.infra import metrics, tracing
from chat.infra.redisclient import is_cluster
from chat.realtime import usercontrol
from chat.realtime.eventbus import channel, user_of_channel
from chat.realtime.events import untraced
from push.sharded import ShardedChannels

log = logging.getLogger("push.hub")


class Subscriber(Protocol):
    user_id: str

    def offer(self, frame: str) -> None: ...

    def restart(self) -> None: ...

    def deactivated(self) -> None: ...


class Hub:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._local: dict[str, set[Subscriber]] = defaultdict(set)
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._sharded = (
            ShardedChannels(cast(Any, redis), self._fan_out, self._lost) if is_cluster(redis) else None
        )

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self._local.values())

    async def join(self, subscriber: Subscriber) -> None:
        """Register a socket; returns once its user's channel is subscribed (no event can be missed)."""
        if self._sharded is not None:
            await self._join_sharded(self._sharded, subscriber)
            return
        async with self._lock:
            first = not self._local[subscriber.user_id]
            self._local[subscriber.user_id].add(subscriber)
            if not first:
                return
            name = channel(subscriber.user_id)
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[name] = confirmed
            pubsub = self._ensure_pubsub()
            try:
                await pubsub.subscribe(name)
                self._ensure_reader()
                await asyncio.wait_for(asyncio.shield(confirmed), 5)
            except BaseException:
                self._forget(subscriber)
                self._confirmations.pop(name, None)
                raise

    def _forget(self, subscriber: Subscriber) -> None:
        """A socket whose join failed: gone from the local table, its user too if it was the last."""
        sockets = self._local.get(subscriber.user_id)
        if sockets is not None:
            sockets.discard(subscriber)
            if not sockets:
                del self._local[subscriber.user_id]

    async def leave(self, subscriber: Subscriber) -> None:
        async with self._lock:
            sockets = self._local.get(subscriber.user_id)
            if sockets is None:
                return
            sockets.discard(subscriber)
            if sockets:
                return
            del self._local[subscriber.user_id]
            if self._sharded is not None:
                await self._sharded.unsubscribe(channel(subscriber.user_id))
            elif self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(channel(subscriber.user_id))

    async def _join_sharded(self, sharded: ShardedChannels, subscriber: Subscriber) -> None:
        async with self._lock:
            first = not self._local[subscriber.user_id]
            self._local[subscriber.user_id].add(subscriber)
            if not first:
                return
            try:
                await sharded.subscribe(channel(subscriber.user_id))
            except BaseException:
                self._forget(subscriber)
                raise

    def _lost(self, names: list[str]) -> None:
        """Sharded channels that are no longer subscribed (their node was lost or gave up their
        slot): their users' sockets restart, and resume from their streams."""
        stale = [sockets for name in names if (sockets := self._local.pop(user_of_channel(name), None))]
        for sockets in stale:
            for subscriber in sockets:
                subscriber.restart()

    def _ensure_pubsub(self) -> PubSub:
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
        return self._pubsub

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="push-hub-reader")

    async def _read(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:  # closed before the reader got going: nothing to read
            return
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                kind = message["type"]
                name = (
                    message["channel"].decode()
                    if isinstance(message["channel"], bytes)
                    else message["channel"]
                )
                if kind == "message":
                    self._fan_out(name, message["data"])
                elif kind == "subscribe":
                    confirmed = self._confirmations.pop(name, None)
                    if confirmed is not None and not confirmed.done():
                        confirmed.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The subscription is gone and events may have been missed meanwhile: every local
            # socket is closed with 1012, and its client resumes from its stream elsewhere or here.
            log.warning("pub/sub connection lost (%s); restarting local sockets", exc)
            # Forget them all before anything awaits. A client that comes straight back must find
            # its user unsubscribed, so that join subscribes again on a new connection (read by a
            # new reader) instead of counting a socket of the old one that has not left yet.
            stale, self._local = self._local, defaultdict(set)
            self._pubsub = None
            self._reader = None
            for confirmed in self._confirmations.values():
                if not confirmed.done():
                    confirmed.set_exception(ConnectionError("pub/sub connection lost"))
            self._confirmations.clear()
            for sockets in stale.values():
                for subscriber in sockets:
                    subscriber.restart()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _fan_out(self, name: str, data: bytes | str) -> None:
        sockets = self._local.get(user_of_channel(name))
        if not sockets:
            return
        frame = data.decode() if isinstance(data, bytes) else data  # once per process, not per socket
        if frame.startswith("{"):  # an event: the hot path pays one character's comparison
            frame, parent = untraced(frame)  # the client's frame never holds the trace context
            span = None if parent is None else tracing.deliver(parent, len(sockets))
            for subscriber in list(sockets):
                subscriber.offer(frame)
            if span is not None:
                span.end()
            metrics.observe_delivery(frame)
            return
        if usercontrol.decode(frame) is usercontrol.Order.DEACTIVATED:
            for subscriber in list(sockets):
                subscriber.deactivated()
        # Anything else is neither an event nor an order this process knows: no client gets it.

    async def close(self) -> None:
        if self._sharded is not None:
            await self._sharded.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
