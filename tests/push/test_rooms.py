"""Rooms (docs/design/fanout.md): a big conversation's event is one stream entry and one publish,
fanned out by each push process to its local members; resume merges the user's stream with their
rooms' streams. Against the run's own Redis (real Lua, real pub/sub) and the push hub and session."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from chat.realtime import rooms
from chat.realtime.eventbus import RedisPublisher, RoomPolicy, stream_key
from chat.realtime.events import ParticipantAdded, ParticipantRemoved, StoredEvent, Typing, UserRef
from chat.settings import Settings
from push import frames
from push.hub import Hub
from push.session import Session
from tests.support.fakesocket import FakeWebSocket, Recorder
from tests.support.messages import message_created

ROOM = 5  # members from which a conversation is a room, in these tests
POLICY = RoomPolicy(members=ROOM, maxlen=1000, retention_ms=86_400_000)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


def publisher(redis: Redis) -> RedisPublisher:
    return RedisPublisher(redis, stream_maxlen=1000, rooms=POLICY)


def created(cid: uuid.UUID, seq: int) -> StoredEvent:
    return message_created(uuid.uuid4(), seq, f"m{seq}", conversation_id=cid)


async def test_a_room_message_is_one_entry_and_one_publish_whatever_its_size(redis: Redis) -> None:
    cid, members = uuid.uuid4(), [uuid.uuid4() for _ in range(500)]
    feed = redis.pubsub()
    await feed.subscribe(rooms.feed_of_conversation(cid))
    await feed.get_message(timeout=1)  # the subscribe confirmation
    before = await redis.info("commandstats")

    ids = await publisher(redis).publish(created(cid, 1), members)

    used = await redis.info("commandstats")
    calls = {name: used[name]["calls"] - before.get(name, {"calls": 0})["calls"] for name in used}
    assert calls.get("cmdstat_xadd") == 1 and calls.get("cmdstat_publish") == 1
    assert len(set(ids)) == 1 and len(ids) == len(members)
    position = frames.parse_id(ids[0])
    assert position is not None and rooms.is_room_id(position)
    assert await redis.xlen(rooms.stream_key(cid)) == 1
    assert not any(await asyncio.gather(*(redis.exists(stream_key(u)) for u in members[:20])))
    published = await feed.get_message(timeout=1)
    assert published is not None
    got_cid, frame = rooms.split(published["data"].decode())
    assert got_cid == str(cid) and frames.event_id_of(frame) == ids[0]
    await feed.aclose()  # type: ignore[no-untyped-call]


async def test_below_the_threshold_and_a_users_own_events_stay_per_user(redis: Redis) -> None:
    cid = uuid.uuid4()
    few, many = [uuid.uuid4() for _ in range(ROOM - 1)], [uuid.uuid4() for _ in range(ROOM * 3)]
    await publisher(redis).publish(created(cid, 1), few)
    # What announce sends the user who came: to them alone, in their own stream.
    added = ParticipantAdded(conversation_id=cid, data=UserRef(user_id=many[0]))
    await publisher(redis).publish(added, [many[0]])
    assert not await redis.exists(rooms.stream_key(cid))
    assert all(await asyncio.gather(*(redis.exists(stream_key(u)) for u in [*few, many[0]])))
    # The rest of a room hears it once, in the room's stream.
    await publisher(redis).publish(added, many[1:])
    assert await redis.xlen(rooms.stream_key(cid)) == 1
    assert not await redis.exists(stream_key(many[1]))


async def test_room_ids_never_repeat_across_rooms_and_increase_within_one(redis: Redis) -> None:
    """Two rooms' streams hand out the same Redis ids in the same millisecond; the ids clients see
    differ, and within a room they increase with the entries."""
    members = [uuid.uuid4() for _ in range(ROOM)]
    first, second = uuid.uuid4(), uuid.uuid4()
    pub = publisher(redis)
    async with redis.pipeline(transaction=False) as pipe:
        for seq in range(1, 51):
            for cid in (first, second):
                await pub.stage(pipe, created(cid, seq), members)
        shown = await pipe.execute()
    assert len(set(shown)) == 100
    for cid in (first, second):
        entries = await redis.xrange(rooms.stream_key(cid))
        ids = [frames.parse_id(rooms.shown(i, f[rooms.COUNTER_FIELD])) for i, f in entries]
        assert ids == sorted(ids) and len(ids) == 50  # type: ignore[type-var]
    raw = {e[0] for cid in (first, second) for e in await redis.xrange(rooms.stream_key(cid))}
    assert len(raw) < 100, "the two streams never shared an id: the test proved nothing"


async def test_the_hub_fans_a_room_frame_out_to_its_local_members_once(redis: Redis) -> None:
    cid = uuid.uuid4()
    members = [uuid.uuid4() for _ in range(ROOM * 2)]
    outsider = uuid.uuid4()
    hub = Hub(redis)
    try:
        phone, laptop = Recorder(str(members[0])), Recorder(str(members[0]))
        sockets = [phone, laptop, *(Recorder(str(u)) for u in members[1:4])]
        for socket in sockets:
            await hub.join(socket, [str(cid)])
        stranger = Recorder(str(outsider))
        await hub.join(stranger, [])
        ids = [(await publisher(redis).publish(created(cid, n), members))[0] for n in range(1, 4)]
        await _until(lambda: all(len(s.frames) == 3 for s in sockets))
        for socket in sockets:
            assert [frames.event_id_of(f) for f in socket.frames] == ids
        assert phone.frames[0] is laptop.frames[0]  # one str for every socket of the process
        await asyncio.sleep(0.05)
        assert stranger.frames == []

        # Typing goes once for the room, and not back to the typer.
        typing = Typing(conversation_id=cid, data=UserRef(user_id=members[1]))
        await publisher(redis).publish_ephemeral(typing, [u for u in members if u != members[1]])
        await _until(lambda: len(phone.frames) == 4)
        assert '"typing"' in phone.frames[-1] and len(sockets[2].frames) == 3
    finally:
        await hub.close()


async def test_the_hub_follows_a_users_own_membership_events(redis: Redis) -> None:
    cid = uuid.uuid4()
    members = [uuid.uuid4() for _ in range(ROOM * 2)]
    newcomer, leaver = Recorder(str(members[0])), Recorder(str(members[1]))
    hub = Hub(redis)
    pub = publisher(redis)
    try:
        await hub.join(newcomer, [])
        await hub.join(leaver, [str(cid)])
        # Published to the room before the newcomer's own participant.added reached this process.
        early = (await pub.publish(created(cid, 1), members))[0]
        await _until(lambda: len(leaver.frames) == 1)
        assert newcomer.frames == []
        # As announce sends them: to the user named, in their own stream, and once to the room.
        came = ParticipantAdded(conversation_id=cid, data=UserRef(user_id=members[0]))
        went = ParticipantRemoved(conversation_id=cid, data=UserRef(user_id=members[1]))
        for event, subject in ((came, members[0]), (went, members[1])):
            await pub.publish(event, [subject])
            await pub.publish(event, [u for u in members if u != subject])
        await _until(lambda: early in [frames.event_id_of(f) for f in newcomer.frames])
        later = (await pub.publish(created(cid, 2), members[2:] + members[:1]))[0]
        await _until(lambda: later in [frames.event_id_of(f) for f in newcomer.frames])
        await asyncio.sleep(0.05)
        assert later not in [frames.event_id_of(f) for f in leaver.frames]
        assert str(cid) in hub.rooms_of(newcomer.user_id) and not hub.rooms_of(leaver.user_id)
    finally:
        await hub.close()


@contextlib.asynccontextmanager
async def session(
    settings: Settings, redis: Redis, user: uuid.UUID, room_ids: list[str], last: str | None
) -> AsyncIterator[FakeWebSocket]:
    ws = FakeWebSocket()
    hub = Hub(redis)
    live = Session(ws, user, datetime.now(UTC) + timedelta(minutes=5), settings)  # type: ignore[arg-type]
    task = asyncio.create_task(live.run(redis, hub, last, room_ids))
    try:
        await _until(lambda: any(f["type"] == "ready" for f in ws.sent))
        yield ws
    finally:
        live.restart()
        await task
        await hub.close()


def _events(ws: FakeWebSocket) -> list[dict[str, Any]]:
    return [f for f in ws.sent if "event_id" in f]


async def test_resume_merges_the_users_stream_and_their_rooms_streams(
    settings: Settings, redis: Redis
) -> None:
    """Events of two rooms and of the user's own stream, interleaved; a resume from any point
    gets everything after it (a few within the overlap again), in event id order, then live."""
    me = uuid.uuid4()
    others = [uuid.uuid4() for _ in range(ROOM)]
    big, other_big, small = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pub = publisher(redis)
    sent: list[tuple[str, str]] = []  # (event id, body) in publishing order
    for n in range(30):
        cid, members = [(big, [me, *others]), (other_big, [me, *others]), (small, [me, others[0]])][n % 3]
        body = f"m{n + 1}"
        event = message_created(uuid.uuid4(), n + 1, body, conversation_id=cid)
        event_id = (await pub.publish(event, members))[0]  # mine: members start with me
        sent.append((event_id, body))
    room_ids = [str(big), str(other_big)]
    assert settings.resume_overlap == 0  # one Redis: one clock
    for cut in (0, 1, 2, 14, 29):
        async with session(settings, redis, me, room_ids, sent[cut][0]) as ws:
            got = [(f["event_id"], f["data"]["body"]) for f in _events(ws)]
            # Exactly what followed, but for events of other streams in the position's millisecond.
            assert set(got) >= set(sent[cut + 1 :]), cut
            at = sent[cut][0].split("-")[0]
            assert all(event_id.split("-")[0] == at for event_id, _ in set(got) - set(sent[cut + 1 :]))
            positions = [frames.parse_id(i) for i, _ in got]
            assert positions == sorted(positions)  # type: ignore[type-var]
    # With the default overlap, everything published within it comes again: at least once.
    overlapping = settings.model_copy(update={"resume_overlap_ms": 60_000})
    async with session(overlapping, redis, me, room_ids, sent[20][0]) as ws:
        again = {(f["event_id"], f["data"]["body"]) for f in _events(ws)}
        assert again >= set(sent[21:]) and len(again) > len(sent[21:])

    # A live room event after ready reaches the session once.
    async with session(settings, redis, me, room_ids, sent[-1][0]) as ws:
        [live] = set(await pub.publish(created(big, 99), [me, *others]))
        await _until(lambda: live in [f["event_id"] for f in _events(ws)])
        await asyncio.sleep(0.05)
        assert [f["event_id"] for f in _events(ws)].count(live) == 1


async def test_a_room_stream_trimmed_past_the_position_answers_resync_required(
    settings: Settings, redis: Redis
) -> None:
    me, cid = uuid.uuid4(), uuid.uuid4()
    members = [me, *(uuid.uuid4() for _ in range(ROOM))]
    pub = RedisPublisher(
        redis, stream_maxlen=1000, rooms=RoomPolicy(members=ROOM, maxlen=10, retention_ms=86_400_000)
    )
    first = (await pub.publish(created(cid, 1), members))[0]
    for n in range(2, 400):
        await pub.publish(created(cid, n), members)
    settings = settings.model_copy(update={"resume_overlap_ms": 0})
    async with session(settings, redis, me, [str(cid)], first) as ws:
        assert ws.sent[0]["type"] == "resync_required"
    newest = (await redis.xrevrange(rooms.stream_key(cid), count=1))[0]
    recent = rooms.shown(newest[0], newest[1][rooms.COUNTER_FIELD])
    async with session(settings, redis, me, [str(cid)], recent) as ws:
        # Its own room's stream is read after the position exactly: nothing comes again.
        assert ws.sent[0]["type"] == "ready"
        assert ws.sent[0]["last_event_id"] == recent and ws.sent[0]["replayed"] == 0


async def _until(predicate: Any, timeout: float = 3) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
