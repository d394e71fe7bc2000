"""How events travel through Redis: one capped stream and one pub/sub channel per user.

A stream entry id is the event's `event_id` for that user, so ids increase per user and a
reconnecting client resumes with XRANGE from its last id. The push process subscribes only to the
channels of users connected to it.

A user's keys carry their id as hash tag (`events:{<id>}`, `user:{<id>}`, and their presence), so
on a Redis Cluster they share one slot: the script that appends to a stream and publishes on the
channel touches one slot, and publishes with SPUBLISH (sharded pub/sub), which reaches only the
slot's own shard instead of every node of the cluster. An event for many users is one script call
per slot group, pipelined to each node at once. On one Redis it is one call for every recipient,
published with PUBLISH, as before.

A conversation of `LARGE_ROOM_MEMBERS` or more is a room (`chat.realtime.rooms`): its messages,
reactions and read markers are one script call whatever its size, and its typing one publish.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.crc import key_slot

from chat.infra.redisclient import is_cluster
from chat.jobqueue.outbox import Outbox
from chat.realtime import rooms as rooms_module
from chat.realtime.events import LUA_FRAME, StoredEvent, Typing, encode
from chat.settings import Settings

STREAM_PREFIX = "events:"
CHANNEL_PREFIX = "user:"
EVENT_FIELD = b"e"


def stream_key(user_id: uuid.UUID | str) -> str:
    return f"{STREAM_PREFIX}{{{user_id}}}"


def channel(user_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{{{user_id}}}"


def user_of_channel(name: str) -> str:
    """The user id a channel name carries (`channel`'s inverse)."""
    return name[len(CHANNEL_PREFIX) + 1 : -1]


def slot_of(user_id: uuid.UUID | str) -> int:
    """The cluster hash slot of every key of the user's (their id is the hash tag)."""
    return key_slot(str(user_id).encode())


def publish_command(cluster: bool) -> str:
    # SPUBLISH reaches the subscribers of the channel's shard only; PUBLISH on a cluster is
    # broadcast over the cluster bus to every node.
    return "SPUBLISH" if cluster else "PUBLISH"


class Publisher(Protocol):
    async def publish(self, event: StoredEvent, recipients: Iterable[uuid.UUID]) -> Sequence[str]: ...

    async def publish_many(self, batch: Sequence[tuple[StoredEvent, Sequence[uuid.UUID]]]) -> None: ...

    async def publish_ephemeral(self, event: Typing, recipients: Iterable[uuid.UUID]) -> None: ...


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """From how many members a conversation is a room, and how long its stream is kept."""

    members: int
    maxlen: int
    retention_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RoomPolicy:
        return cls(
            settings.large_room_members,
            settings.room_stream_maxlen,
            settings.room_stream_retention_seconds * 1000,
        )

    def is_room(self, event: StoredEvent, recipients: int) -> bool:
        return recipients >= self.members and event.type in rooms_module.ROOM_EVENTS


class RedisPublisher:
    # Append to each recipient's stream and publish the framed event on their channel, in one round
    # trip; the frame is chat.realtime.events' own (LUA_FRAME). On a cluster every key of one call
    # is in one slot, and the channels too (they carry the same tags): SPUBLISH is checked
    # against the script's slot like a key.
    _BODY = """
local ids = {}
for i, key in ipairs(KEYS) do
  local id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
  redis.call('%s', ARGV[2 + i], frame(id, ARGV[2]))
  ids[i] = id
end
return ids
"""
    _SCRIPT = LUA_FRAME + _BODY % "PUBLISH"
    _CLUSTER_SCRIPT = LUA_FRAME + _BODY % "SPUBLISH"

    def __init__(self, redis: Redis, *, stream_maxlen: int, rooms: RoomPolicy | None = None) -> None:
        self._redis = redis
        self._maxlen = stream_maxlen
        self._rooms = rooms
        self._cluster = is_cluster(redis)
        self._text = self._CLUSTER_SCRIPT if self._cluster else self._SCRIPT
        self._room_text = rooms_module.CLUSTER_ROOM_SCRIPT if self._cluster else rooms_module.ROOM_SCRIPT
        self.script = redis.register_script(self._text)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> RedisPublisher:
        return cls(
            redis, stream_maxlen=settings.event_stream_maxlen, rooms=RoomPolicy.from_settings(settings)
        )

    def _room_of(self, event: StoredEvent, users: list[uuid.UUID]) -> RoomPolicy | None:
        if self._rooms is None or not self._rooms.is_room(event, len(users)):
            return None
        return self._rooms

    @staticmethod
    def room_call(event: StoredEvent, policy: RoomPolicy) -> tuple[list[str], list[str | int | bytes]]:
        """The room script's keys and arguments: one call for every member."""
        cid = event.conversation_id
        oldest = int(time.time() * 1000) - policy.retention_ms
        keys = [rooms_module.stream_key(cid), rooms_module.counter_key(cid)]
        args: list[str | int | bytes] = [
            policy.maxlen,
            encode(event),
            oldest,
            rooms_module.feed_of_conversation(cid),
            str(cid),
            rooms_module.feed_of(cid),
        ]
        return keys, args

    def call(self, event: StoredEvent, users: list[uuid.UUID]) -> tuple[list[str], list[str | int | bytes]]:
        """The script's keys and arguments for `event` to `users` (the benchmark pipelines them)."""
        keys = [stream_key(u) for u in users]
        args: list[str | int | bytes] = [self._maxlen, encode(event), *(channel(u) for u in users)]
        return keys, args

    async def publish(self, event: StoredEvent, recipients: Iterable[uuid.UUID]) -> list[str]:
        """Store and publish `event` for each recipient; returns the event ids, one per recipient."""
        users = list(dict.fromkeys(recipients))
        if not users:
            return []
        room = self._room_of(event, users)
        if room is not None:
            keys, args = self.room_call(event, room)
            command = ("EVAL", self._room_text, len(keys), *keys, *args)
            shown = _text(await self._redis.execute_command(*command))  # type: ignore[no-untyped-call]
            return [shown] * len(users)
        if self._cluster:
            return await self._publish_by_slot(event, users)
        keys, args = self.call(event, users)
        ids = await self.script(keys=keys, args=args)
        return [_text(i) for i in ids]

    async def _publish_by_slot(self, event: StoredEvent, users: list[uuid.UUID]) -> list[str]:
        groups = by_slot(users)
        async with self._redis.pipeline(transaction=False) as pipe:
            for group in groups:
                keys, args = self.call(event, group)
                pipe.execute_command("EVAL", self._text, len(keys), *keys, *args)
            replies = await pipe.execute()
        ids: dict[uuid.UUID, str] = {}
        for group, reply in zip(groups, replies, strict=True):
            ids.update(zip(group, map(_text, reply), strict=True))
        return [ids[user] for user in users]

    async def publish_many(self, batch: Sequence[tuple[StoredEvent, Sequence[uuid.UUID]]]) -> None:
        """Publish several events in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for event, recipients in batch:
                await self.stage(pipe, event, recipients)
            await pipe.execute()

    async def stage(self, pipe: Pipeline, event: StoredEvent, recipients: Iterable[uuid.UUID]) -> None:
        """Add the publish to `pipe` (on a cluster, a cluster pipeline: one call per slot group)."""
        users = list(dict.fromkeys(recipients))
        if not users:
            return
        room = self._room_of(event, users)
        if room is not None:
            keys, args = self.room_call(event, room)
            pipe.execute_command("EVAL", self._room_text, len(keys), *keys, *args)
            return
        # EVAL with the script's text, not redis-py's EVALSHA: a pipeline holding a registered
        # script asks SCRIPT EXISTS first, a round trip of its own every time. Redis caches the
        # compiled script by its hash either way.
        for group in by_slot(users) if self._cluster else [users]:
            keys, args = self.call(event, group)
            pipe.execute_command("EVAL", self._text, len(keys), *keys, *args)

    async def publish_ephemeral(self, event: Typing, recipients: Iterable[uuid.UUID]) -> None:
        data = encode(event)
        command = publish_command(self._cluster)
        users = list(dict.fromkeys(recipients))
        # The typer is not among the recipients: with them the conversation has one member more.
        if self._rooms is not None and len(users) + 1 >= self._rooms.members:
            # One publish for the room; each push process skips the typer's own sockets.
            cid = event.conversation_id
            feed = rooms_module.feed_of_conversation(cid)
            await self._redis.execute_command(command, feed, f"{cid} ".encode() + data)  # type: ignore[no-untyped-call]
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                # A cluster pipeline routes SPUBLISH by its channel's slot, as it does a key.
                pipe.execute_command(command, channel(user), data)
            await pipe.execute()

    def staged(self, outbox: Outbox) -> StagedPublisher:
        return StagedPublisher(self, outbox)


def by_slot(users: list[uuid.UUID]) -> list[list[uuid.UUID]]:
    """`users` grouped by their keys' cluster slot, in the order each slot first appears."""
    groups: dict[int, list[uuid.UUID]] = {}
    for user in users:
        groups.setdefault(slot_of(user), []).append(user)
    return list(groups.values())


def _text(event_id: bytes | str | int) -> str:
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)


class StagedPublisher:
    """Publishes into an outbox instead of Redis: the worker runs it in the transaction that
    finishes the job, so a job's events and its completion are written together or not at all."""

    def __init__(self, publisher: RedisPublisher, outbox: Outbox) -> None:
        self._publisher = publisher
        self._outbox = outbox

    async def publish(self, event: StoredEvent, recipients: Iterable[uuid.UUID]) -> list[str]:
        users = list(dict.fromkeys(recipients))
        if users:
            self._outbox.append(lambda pipe: self._publisher.stage(pipe, event, users))
        return []  # the ids exist once the transaction has run

    async def publish_many(self, batch: Sequence[tuple[StoredEvent, Sequence[uuid.UUID]]]) -> None:
        for event, recipients in batch:
            await self.publish(event, recipients)

    async def publish_ephemeral(self, event: Typing, recipients: Iterable[uuid.UUID]) -> None:
        await self._publisher.publish_ephemeral(event, recipients)
