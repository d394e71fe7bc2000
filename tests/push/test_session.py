"""The push session against an in-process Redis: the replay/live seam, resync and backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from redis import exceptions as redis_errors

from chat.infra.redisclient import create_redis
from chat.realtime.eventbus import RedisPublisher, stream_key
from chat.realtime.events import MessageCreated
from chat.settings import Settings
from push import frames
from push.hub import Hub
from push.replay import trimmed_after as _trimmed_after
from push.session import Session
from tests.support.fakesocket import FakeWebSocket
from tests.support.messages import message_created
from tests.support.settings import make_settings


def message(user: uuid.UUID, seq: int) -> MessageCreated:
    return message_created(user, seq, f"m{seq}")


@pytest.fixture
def push_settings() -> Settings:
    return make_settings(redis_url=f"memory://{uuid.uuid4().hex}", push_send_queue_size=8)


@pytest.fixture
async def redis(push_settings: Settings) -> AsyncIterator[ArqRedis]:
    """A Redis client of the test's own, beside the session's, on the same in-process Redis."""
    client = create_redis(push_settings)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def started(
    settings: Settings, ws: FakeWebSocket, user: uuid.UUID, last: str | None
) -> AsyncIterator[tuple[ArqRedis, Hub, Session, asyncio.Task[None]]]:
    """A session on `ws` from `last`, with a Redis client and a hub of its own, closed afterwards."""
    redis = create_redis(settings)
    hub = Hub(redis)
    session = Session(ws, user, datetime.now(UTC) + timedelta(minutes=5), settings)  # type: ignore[arg-type]
    task = asyncio.create_task(session.run(redis, hub, last))
    try:
        yield redis, hub, session, task
    finally:
        await hub.close()
        await redis.aclose()


async def wait_for(predicate: Any, timeout: float = 2) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_resume_seam_has_no_gap_and_no_duplicate(push_settings: Settings, redis: ArqRedis) -> None:
    user = uuid.uuid4()
    publisher = RedisPublisher(redis, stream_maxlen=1000)
    ids = [(await publisher.publish(message(user, i), [user]))[0] for i in range(1, 6)]
    ws = FakeWebSocket()

    async def publish_during_replay(frame: dict[str, Any]) -> None:
        # While the replay is being sent, two more events arrive live: both must come exactly once.
        if frame.get("data", {}).get("seq") == 3:
            ws.on_send = None
            await publisher.publish(message(user, 6), [user])
            await publisher.publish(message(user, 7), [user])

    ws.on_send = publish_during_replay
    async with started(push_settings, ws, user, ids[0]) as (_, _, session, task):
        await wait_for(lambda: len(ws.sent) >= 7)
        await asyncio.sleep(0.1)
        seqs = [f["data"]["seq"] for f in ws.sent if f.get("type") == "message.created"]
        assert seqs == [2, 3, 4, 5, 6, 7]
        ready = next(f for f in ws.sent if f["type"] == "ready")
        # The ready frame follows the replayed events; it counts the ones read from the stream.
        assert ws.sent.index(ready) >= 4 and ready["replayed"] >= 4
        event_ids = [f["event_id"] for f in ws.sent if "event_id" in f]
        assert len(event_ids) == len(set(event_ids))
        session.restart()
        await task


async def test_unknown_or_trimmed_ids_ask_for_resync(push_settings: Settings, redis: ArqRedis) -> None:
    user = uuid.uuid4()
    key = stream_key(user)
    assert await _trimmed_after(redis, key, (1, 0))  # no stream at all
    publisher = RedisPublisher(redis, stream_maxlen=1000)
    ids: list[tuple[int, int]] = []
    for i in range(5):
        parsed = frames.parse_id((await publisher.publish(message(user, i), [user]))[0])
        assert parsed is not None
        ids.append(parsed)
    assert not await _trimmed_after(redis, key, ids[0])
    assert await _trimmed_after(redis, key, (ids[-1][0] + 10_000, 0))  # never issued
    await redis.xtrim(key, maxlen=2, approximate=False)
    assert await _trimmed_after(redis, key, ids[0])
    assert not await _trimmed_after(redis, key, ids[3])
    # Redis lost its data and the stream began again: an id from before is not a place to resume.
    await redis.delete(key)
    await asyncio.sleep(0.002)
    await publisher.publish(message(user, 9), [user])
    assert await _trimmed_after(redis, key, ids[3])

    ws = FakeWebSocket()
    async with started(push_settings, ws, user, "not-an-id") as (_, _, session, task):
        await wait_for(lambda: len(ws.sent) >= 2)
        assert ws.sent[0] == {"type": "resync_required"} and ws.sent[1]["type"] == "ready"
        session.restart()
        await task


async def test_a_client_that_stops_reading_is_closed_4408(push_settings: Settings, redis: ArqRedis) -> None:
    user = uuid.uuid4()
    publisher = RedisPublisher(redis, stream_maxlen=1000)
    ws = FakeWebSocket()
    async with started(push_settings, ws, user, None) as (_, hub, _, task):
        await wait_for(lambda: any(f["type"] == "ready" for f in ws.sent))
        ws.hold.clear()  # the socket stops draining
        for i in range(50):
            await publisher.publish(message(user, i), [user])
        await asyncio.wait_for(task, 2)
        assert ws.closed_with == frames.TOO_SLOW.code
        assert hub.connections == 0


def test_event_ids_are_read_from_the_frame_prefix() -> None:
    assert frames.event_id_of('{"event_id":"17-3","type":"message.created"}') == "17-3"
    assert frames.event_id_of('{"type":"typing"}') is None
    assert frames.parse_id("17-3") == (17, 3) and frames.parse_id(b"1-0") == (1, 0)
    assert frames.parse_id("17") is None and frames.parse_id("a-b") is None and frames.parse_id(None) is None
    assert frames.parse_id("10-0") > frames.parse_id("9-99")  # type: ignore[operator]
    # What Redis would refuse is not an id: other scripts' digits, a trailing newline, past 2**64 - 1.
    for forged in ("\u0663-0", "1-\u00b2", "1-0\n", "18446744073709551616-0", "1-99999999999999999999"):
        assert frames.parse_id(forged) is None, forged
    assert frames.parse_id("18446744073709551615-0") == (2**64 - 1, 0)


async def test_redis_failing_while_the_session_starts_closes_1011_with_a_reason(
    push_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = FakeWebSocket()
    async with started(push_settings, ws, uuid.uuid4(), None) as (redis, hub, _, task):

        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise redis_errors.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

        monkeypatch.setattr(redis, "xrevrange", unreachable)
        await asyncio.wait_for(task, 2)
        # A server error is never a normal closure (1000): the client is told to come back, slowly.
        assert (ws.closed_with, ws.close_reason) == (1011, "server error; reconnect with back-off")
        assert not any(f["type"] == "ready" for f in ws.sent)
        assert hub.connections == 0


async def test_lost_subscription_closes_1012_with_a_reason(
    push_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = FakeWebSocket()
    async with started(push_settings, ws, uuid.uuid4(), None) as (_, hub, _, task):
        await wait_for(lambda: any(f["type"] == "ready" for f in ws.sent))

        async def lost(*args: Any, **kwargs: Any) -> Any:
            raise redis_errors.ConnectionError("Connection closed by server.")

        monkeypatch.setattr(hub._pubsub, "get_message", lost)
        await asyncio.wait_for(task, 3)  # the reader polls once a second
        assert (ws.closed_with, ws.close_reason) == (1012, "server restarting; reconnect")


async def test_client_frames_over_the_limit_close_4429(push_settings: Settings) -> None:
    settings = push_settings.model_copy(update={"rate_limit_client_frames": "5/second"})
    ws = FakeWebSocket()
    async with started(settings, ws, uuid.uuid4(), None) as (_, _, _, task):
        await wait_for(lambda: any(f["type"] == "ready" for f in ws.sent))
        # Binary frames count too.
        ws.client_sends(*['{"type":"ping"}'] * 4, b"\x00", *['{"type":"ping"}'] * 5)
        await asyncio.wait_for(task, 2)
        assert ws.closed_with == 4429
        assert ws.close_reason is not None
        assert re.fullmatch(r"too many frames; retry after [1-9]\d* s", ws.close_reason), ws.close_reason
        assert len([f for f in ws.sent if f["type"] in ("pong", "error")]) <= 5


@pytest.mark.parametrize(("limit", "pings"), [("off", 60), ("20/second", 20)])
async def test_client_frames_within_the_limit_or_off_are_answered(
    push_settings: Settings, limit: str, pings: int
) -> None:
    # A send queue roomier than the pings: the fake socket never makes the receive loop yield.
    settings = push_settings.model_copy(
        update={"rate_limit_client_frames": limit, "push_send_queue_size": 128}
    )
    ws = FakeWebSocket()
    async with started(settings, ws, uuid.uuid4(), None) as (_, _, session, task):
        await wait_for(lambda: any(f["type"] == "ready" for f in ws.sent))
        ws.client_sends(*['{"type":"ping"}'] * pings)
        await wait_for(lambda: len([f for f in ws.sent if f["type"] == "pong"]) == pings)
        assert not task.done()
        session.restart()
        await task
