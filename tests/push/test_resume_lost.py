"""Resuming from a stream that went back in time (issue 20): Redis came back from an older
snapshot, or a replica that lacked the newest entries was promoted. The client's last_event_id
named an entry it got; gone from the stream though not trimmed, the events after it may be gone
too, so the client is told `resync_required` instead of being replayed the newer events alone.

On the run's Redis (a cluster under TEST_REDIS_MODE=cluster): a snapshot is a DUMP of the stream
restored over it later, exactly the state a restart from that snapshot leaves.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from chat.infra.redisclient import create_redis
from chat.realtime.eventbus import RedisPublisher, stream_key
from push import frames
from push.hub import Hub
from push.replay import trimmed_after as _trimmed_after
from push.session import Session
from tests.support.messages import message_created
from tests.support.settings import make_settings


class Socket:
    """The part of Falcon's WebSocket a session uses; records what it is sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self._never: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def accept(self) -> None:
        pass

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))

    async def receive_text(self) -> str:
        return await self._never

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed = True


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = create_redis(make_settings(redis_url=redis_url))
    yield client
    await client.aclose(close_connection_pool=True)


async def publish(redis: Any, user: uuid.UUID, *seqs: int) -> list[tuple[int, int]]:
    publisher = RedisPublisher(redis, stream_maxlen=1000)
    ids = []
    for seq in seqs:
        [event_id] = await publisher.publish(message_created(user, seq, f"m{seq}"), [user])
        parsed = frames.parse_id(event_id)
        assert parsed is not None
        ids.append(parsed)
    return ids


async def test_a_stream_restored_from_an_older_snapshot_asks_for_resync(redis: Any) -> None:
    user = uuid.uuid4()
    key = stream_key(user)
    await publish(redis, user, 1, 2)
    snapshot = await redis.dump(key)
    [_, seen] = await publish(redis, user, 3, 4)  # the client got 4; 3 and 4 are not in the snapshot
    await redis.restore(key, 0, snapshot, replace=True)
    await asyncio.sleep(0.005)  # a restart takes longer: ids of new entries are from a later ms
    [after] = await publish(redis, user, 5)  # a new event, its id past the client's
    assert after > seen
    info = await redis.xinfo_stream(key)
    first = frames.parse_id(info["first-entry"][0])
    # What the trimmed-stream rule reads says nothing is missing: no deletion recorded, the first
    # entry older than the client's, the last generated newer.
    assert info["max-deleted-entry-id"] in (b"0-0", "0-0") and first is not None and first < seen
    assert await _trimmed_after(redis, key, seen)


async def test_entries_deleted_from_the_middle_or_a_recreated_stream_ask_for_resync(redis: Any) -> None:
    user = uuid.uuid4()
    key = stream_key(user)
    ids = await publish(redis, user, 1, 2, 3, 4)
    assert not await _trimmed_after(redis, key, ids[1])
    await redis.xdel(key, "{}-{}".format(*ids[1]))
    assert await _trimmed_after(redis, key, ids[1])
    assert not await _trimmed_after(redis, key, ids[2])  # nothing after 3 is missing
    await redis.delete(key)
    await asyncio.sleep(0.005)
    await publish(redis, user, 5)
    assert await _trimmed_after(redis, key, ids[3])


async def test_trimmed_and_intact_streams_keep_their_answers(redis: Any) -> None:
    user = uuid.uuid4()
    key = stream_key(user)
    ids = await publish(redis, user, 1, 2, 3, 4, 5)
    assert not await _trimmed_after(redis, key, ids[0])
    assert not await _trimmed_after(redis, key, ids[-1])
    assert await _trimmed_after(redis, key, (ids[-1][0] + 10_000, 0))  # never issued
    await redis.xtrim(key, maxlen=2, approximate=False)
    assert await _trimmed_after(redis, key, ids[0])
    assert not await _trimmed_after(redis, key, ids[3])


async def test_a_client_resuming_past_lost_events_gets_resync_required_then_ready(redis: Any) -> None:
    user = uuid.uuid4()
    key = stream_key(user)
    await publish(redis, user, 1)
    snapshot = await redis.dump(key)
    [seen, _] = await publish(redis, user, 2, 3)  # the client got 2; 3 it never saw
    await redis.restore(key, 0, snapshot, replace=True)
    await asyncio.sleep(0.005)
    await publish(redis, user, 4)
    ws = Socket()
    hub = Hub(redis)
    session = Session(ws, user, datetime.now(UTC) + timedelta(minutes=5), make_settings())  # type: ignore[arg-type]
    task = asyncio.create_task(session.run(redis, hub, "{}-{}".format(*seen)))
    try:
        async with asyncio.timeout(5):
            while len(ws.sent) < 2:
                await asyncio.sleep(0.01)
        # Not event 4 alone, which would hide that 3 is gone: the client reloads over REST.
        assert ws.sent[0] == {"type": "resync_required"} and ws.sent[1]["type"] == "ready"
        assert not any("event_id" in f for f in ws.sent)
    finally:
        session.restart()
        await task
        await hub.close()
