"""How events travel through Redis: one capped stream and one pub/sub channel per user.

A stream entry id is the event's `event_id` for that user, so ids increase per user and a
reconnecting client resumes with XRANGE from its last id. The push process subscribes only to the
channels of users connected to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chat.jobqueue.outbox import Outbox
from chat.realtime.events import LUA_FRAME, StoredEvent, Typing, encode

STREAM_PREFIX = "events:"
CHANNEL_PREFIX = "user:"
EVENT_FIELD = b"e"


def stream_key(user_id: uuid.UUID | str) -> str:
    return f"{STREAM_PREFIX}{user_id}"


def channel(user_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{user_id}"


class Publisher(Protocol):
    async def publish(self, event: StoredEvent, recipients: Iterable[uuid.UUID]) -> Sequence[str]: ...

    async def publish_many(self, batch: Sequence[tuple[StoredEvent, Sequence[uuid.UUID]]]) -> None: ...

    async def publish_ephemeral(self, event: Typing, recipients: Iterable[uuid.UUID]) -> None: ...


class RedisPublisher:
    # Append to each recipient's stream and publish the framed event on their channel, in one round
    # trip; the frame is chat.realtime.events' own (LUA_FRAME).
    _SCRIPT = (
        LUA_FRAME
        + """
local ids = {}
for i, key in ipairs(KEYS) do
  local id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
  redis.call('PUBLISH', ARGV[2 + i], frame(id, ARGV[2]))
  ids[i] = id
end
return ids
"""
    )

    def __init__(self, redis: Redis, *, stream_maxlen: int) -> None:
        self._redis = redis
        self._maxlen = stream_maxlen
        self.script = redis.register_script(self._SCRIPT)

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
        keys, args = self.call(event, users)
        ids = await self.script(keys=keys, args=args)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def publish_many(self, batch: Sequence[tuple[StoredEvent, Sequence[uuid.UUID]]]) -> None:
        """Publish several events in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for event, recipients in batch:
                await self.stage(pipe, event, recipients)
            await pipe.execute()

    async def stage(self, pipe: Pipeline, event: StoredEvent, recipients: Iterable[uuid.UUID]) -> None:
        users = list(dict.fromkeys(recipients))
        if users:
            keys, args = self.call(event, users)
            # EVAL with the script's text, not redis-py's EVALSHA: a pipeline holding a registered
            # script asks SCRIPT EXISTS first, a round trip of its own every time. Redis caches the
            # compiled script by its hash either way.
            pipe.execute_command("EVAL", self._SCRIPT, len(keys), *keys, *args)

    async def publish_ephemeral(self, event: Typing, recipients: Iterable[uuid.UUID]) -> None:
        data = encode(event)
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in dict.fromkeys(recipients):
                pipe.publish(channel(user), data)
            await pipe.execute()

    def staged(self, outbox: Outbox) -> StagedPublisher:
        return StagedPublisher(self, outbox)


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
