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

Rooms (`chat.realtime.rooms`) are not subscribed one by one: every push process listens to the
`FEEDS` room feeds, and keeps which of its users are in which room (read at connect, then kept up
to date by the participant.* and conversation.created events each user hears on their own
channel). A room frame arrives once per process, and goes as the same `str` to every local socket
of every local member of the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Protocol, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from chat.infra import metrics, tracing
from chat.infra.redisclient import is_cluster
from chat.realtime import rooms, usercontrol
from chat.realtime.eventbus import EVENT_FIELD, channel, user_of_channel
from chat.realtime.events import FRAME_PREFIX, event_id_of, untraced
from chat.realtime.events import frame as event_frame
from chat.realtime.roomlist import RoomList
from push.sharded import ShardedChannels

log = logging.getLogger("push.hub")

# How often the rooms of users who connected while Postgres was away are asked for again.
ROOM_LIST_RETRY_SECONDS = 2.0
# Membership events are told apart from the rest by their type, found near the frame's start.
_MEMBERSHIP_TYPES = ('"type":"participant.', '"type":"conversation.created"')
_TYPE_WINDOW = 160
# A newcomer's catch-up: the room's entries from this long before their own participant.added (a
# worker may publish a message to them just before the api announces them), at most this many.
CATCH_UP_MS = 1000
CATCH_UP_LIMIT = 1000


class Subscriber(Protocol):
    user_id: str

    def offer(self, frame: str) -> None: ...

    def restart(self) -> None: ...

    def deactivated(self) -> None: ...


class Hub:
    def __init__(
        self, redis: Redis, *, room_list: RoomList | None = None, catch_up_ms: int = CATCH_UP_MS
    ) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._local: dict[str, set[Subscriber]] = defaultdict(set)
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._sharded = (
            ShardedChannels(cast(Any, redis), self._fan_out, self._lost) if is_cluster(redis) else None
        )
        self._room_list = room_list
        self._catch_up_ms = catch_up_ms
        self._feeds: set[str] = set()  # the room feeds subscribed
        self._rooms: dict[str, set[str]] = {}  # a room's local members
        self._user_rooms: dict[str, set[str]] = {}  # a local user's rooms
        self._unknown: set[str] = set()  # local users whose rooms Postgres could not tell yet
        self._tasks: set[asyncio.Task[None]] = set()
        self._feeding: asyncio.Task[None] | None = None  # subscribing the feeds, on a cluster
        self._asking: asyncio.Task[None] | None = None  # asking again for unknown users' rooms

    def rooms_of(self, user_id: str) -> set[str]:
        return self._user_rooms.get(user_id, set())

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self._local.values())

    async def join(self, subscriber: Subscriber, rooms: Iterable[str] | None = ()) -> None:
        """Register a socket; returns once its user's channel (and the room feeds, when it is in a
        room) are subscribed: no event can be missed. `rooms` None: Postgres could not tell them."""
        wanted = list(rooms) if rooms is not None else []
        if self._sharded is not None:
            await self._join_sharded(self._sharded, subscriber, bool(wanted) or rooms is None)
        else:
            async with self._lock:
                first = not self._local[subscriber.user_id]
                self._local[subscriber.user_id].add(subscriber)
                try:
                    if first:
                        await self._subscribe(channel(subscriber.user_id))
                    for name in _feeds_missing(self._feeds):
                        await self._subscribe(name)
                        self._feeds.add(name)
                except BaseException:
                    self._forget(subscriber)
                    raise
        self._add_rooms(subscriber.user_id, wanted)
        if rooms is None:
            self._unknown.add(subscriber.user_id)
            if self._asking is None or self._asking.done():  # one retry loop a process
                self._asking = asyncio.get_running_loop().create_task(self._ask_rooms_again())

    async def _subscribe(self, name: str) -> None:
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[name] = confirmed
        pubsub = self._ensure_pubsub()
        try:
            await pubsub.subscribe(name)
            self._ensure_reader()
            await asyncio.wait_for(asyncio.shield(confirmed), 5)
        except BaseException:
            self._confirmations.pop(name, None)
            raise

    def _add_rooms(self, user_id: str, cids: Iterable[str]) -> None:
        for cid in cids:
            self._rooms.setdefault(cid, set()).add(user_id)
            self._user_rooms.setdefault(user_id, set()).add(cid)

    def _drop_room(self, user_id: str, cid: str) -> None:
        members = self._rooms.get(cid)
        if members is not None:
            members.discard(user_id)
            if not members:
                del self._rooms[cid]
        mine = self._user_rooms.get(user_id)
        if mine is not None:
            mine.discard(cid)
            if not mine:
                del self._user_rooms[user_id]

    def _drop_user_rooms(self, user_id: str) -> None:
        for cid in list(self._user_rooms.get(user_id, ())):
            self._drop_room(user_id, cid)
        self._unknown.discard(user_id)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask_rooms_again(self) -> None:
        """Users who connected while Postgres was away: once it answers, those in a room restart
        their sockets and resume, their rooms' streams included."""
        if self._room_list is None:
            return
        while self._unknown:
            await asyncio.sleep(ROOM_LIST_RETRY_SECONDS)
            for user in list(self._unknown):
                found = await self._room_list.of(uuid.UUID(user))
                if found is None:
                    break  # still away
                self._unknown.discard(user)
                if found and user in self._local:
                    for subscriber in list(self._local[user]):
                        subscriber.restart()

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
            self._drop_user_rooms(subscriber.user_id)
            if self._sharded is not None:
                await self._sharded.unsubscribe(channel(subscriber.user_id))
            elif self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(channel(subscriber.user_id))

    async def _join_sharded(self, sharded: ShardedChannels, subscriber: Subscriber, in_rooms: bool) -> None:
        async with self._lock:
            first = not self._local[subscriber.user_id]
            self._local[subscriber.user_id].add(subscriber)
            try:
                if first:
                    await sharded.subscribe(channel(subscriber.user_id))
            except BaseException:
                self._forget(subscriber)
                raise
        # On a cluster the feeds are subscribed once a local user is in a room, and outside the
        # lock: during a failover a feed's node may take seconds to come back, and no other user's
        # join may wait for it. A member of a room waits.
        if in_rooms:
            try:
                await asyncio.shield(self._sharded_feeds(sharded))
            except BaseException:
                await self.leave(subscriber)
                raise

    def _sharded_feeds(self, sharded: ShardedChannels) -> asyncio.Future[None]:
        """The task subscribing the feeds not subscribed yet (one at a time for the process)."""
        if self._feeding is None or (self._feeding.done() and _feeds_missing(self._feeds)):
            self._feeding = asyncio.get_running_loop().create_task(self._subscribe_feeds(sharded))
            self._feeding.add_done_callback(lambda done: done.cancelled() or done.exception())
        return self._feeding

    async def _subscribe_feeds(self, sharded: ShardedChannels) -> None:
        for _ in range(50):
            try:
                for name in _feeds_missing(self._feeds):
                    await sharded.subscribe(name)
                    self._feeds.add(name)
                return
            except Exception as exc:
                log.warning("room feeds not subscribed yet (%s)", exc)
                await asyncio.sleep(1.0)  # the slot map is relearned by each try: not in a tight loop
        raise ConnectionError("the room feeds could not be subscribed")

    def _lost(self, names: list[str]) -> None:
        """Sharded channels that are no longer subscribed (their node was lost or gave up their
        slot): their users' sockets restart, and resume from their streams."""
        feeds = {name for name in names if rooms.is_feed(name)}
        if feeds:
            # A room feed lost: the members of its rooms restart, and resume from the rooms' streams.
            self._feeds -= feeds
            users = {
                user
                for cid, members in self._rooms.items()
                if rooms.feed_of_conversation(cid) in feeds
                for user in members
            }
            names = [*names, *(channel(user) for user in users)]
            if self._sharded is not None and self._rooms:
                # Again at once, not at the next join: local users may join its rooms meanwhile.
                self._sharded_feeds(self._sharded)
        stale = [sockets for name in names if (sockets := self._local.pop(user_of_channel(name), None))]
        for user in {user_of_channel(name) for name in names if not rooms.is_feed(name)}:
            self._drop_user_rooms(user)
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
            self._feeds.clear()
            self._rooms.clear()
            self._user_rooms.clear()
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
        if rooms.is_feed(name):
            self._fan_out_room(data.decode() if isinstance(data, bytes) else data)
            return
        user = user_of_channel(name)
        sockets = self._local.get(user)
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
            head = frame[:_TYPE_WINDOW]
            if any(kind in head for kind in _MEMBERSHIP_TYPES):
                self._membership(user, frame)
            return
        if usercontrol.decode(frame) is usercontrol.Order.DEACTIVATED:
            for subscriber in list(sockets):
                subscriber.deactivated()
        # Anything else is neither an event nor an order this process knows: no client gets it.

    def _fan_out_room(self, message: str) -> None:
        cid, frame = rooms.split(message)
        members = self._rooms.get(cid)
        if not members:
            return
        if frame.startswith(FRAME_PREFIX):
            frame, parent = untraced(frame)
            span = None if parent is None else tracing.deliver(parent, len(members))
            for user in list(members):
                for subscriber in list(self._local.get(user, ())):
                    subscriber.offer(frame)
            if span is not None:
                span.end()
            metrics.observe_delivery(frame)
            return
        # Typing: one publish for the room, and not back to the typer's own sockets.
        try:
            typer = orjson.loads(frame)["data"]["user_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        for user in list(members):
            if user != typer:
                for subscriber in list(self._local.get(user, ())):
                    subscriber.offer(frame)

    def _membership(self, user: str, frame: str) -> None:
        """A user's own membership event: their rooms here follow it. A newcomer also gets what the
        room published from a moment before their arrival, which their feed may have carried
        before this event reached here."""
        try:
            event = orjson.loads(frame)
            cid = event["conversation_id"]
            kind = event["type"]
            subject = event["data"].get("user_id") if kind != "conversation.created" else user
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        if kind == "participant.removed":
            if subject == user:
                self._drop_room(user, cid)
            return
        self._add_rooms(user, [cid])
        if self._sharded is not None:
            self._sharded_feeds(self._sharded)  # a no-op once subscribed
        if kind == "participant.added" and subject == user:
            self._spawn(self._catch_up(user, cid, event_id_of(frame)))

    async def _catch_up(self, user: str, cid: str, since: str | None) -> None:
        ms = int(since.partition("-")[0]) if since else 0
        start = f"{max(0, ms - self._catch_up_ms)}-0"
        try:
            entries = await self._redis.xrange(
                rooms.stream_key(cid), min=start, max="+", count=CATCH_UP_LIMIT
            )
        except Exception as exc:  # the newcomer's next resume reads the room's stream anyway
            log.warning("room catch-up for a newcomer failed (%s)", exc)
            return
        for entry_id, fields in entries:
            shown = rooms.shown(entry_id, fields[rooms.COUNTER_FIELD])
            frame, _ = untraced(event_frame(shown, fields[EVENT_FIELD]).decode())
            for subscriber in list(self._local.get(user, ())):
                subscriber.offer(frame)

    async def close(self) -> None:
        for task in [*self._tasks, self._feeding, self._asking]:
            if task is not None:
                task.cancel()
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


def _feeds_missing(subscribed: set[str]) -> list[str]:
    return [name for name in rooms.feeds() if name not in subscribed]
