"""Groups of up to 10,000 members: creating, adding and typing cost a bounded number of SQL
statements and Redis commands, not one (or one per member) for each member."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import RedisCluster
from sqlalchemy import event, insert, update

from api.deps import Deps
from chat.domain import membership
from chat.infra.redisclient import is_cluster
from chat.jobqueue.shards import shards_of
from chat.models import User
from chat.realtime import presence, rooms
from chat.usecases.conversations import ANNOUNCED_PARTICIPANTS, LARGE_GROUP_MEMBERS, MAX_PARTICIPANTS
from chat.usecases.reading import ROOM_TYPING_SECONDS
from tests.support import ApiClient, TestUser
from tests.support.messages import stream
from tests.support.serverapi import server_key

BIG = MAX_PARTICIPANTS


async def _users(deps: Deps, count: int) -> list[str]:
    """`count` users written straight to Postgres: registering 10,000 would hash 10,000 passwords."""
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "username": f"g{n}",
            "username_key": f"g{n}-{uuid.uuid4().hex[:8]}",
            "display_name": f"g{n}",
            "created_at": now,
        }
        for n in range(count)
    ]
    async with deps.sessions() as session:
        await session.execute(insert(User), rows)
        await session.commit()
    return [str(row["id"]) for row in rows]


@contextmanager
def statements(deps: Deps) -> Iterator[list[str]]:
    """Every SQL statement the api runs meanwhile (one per executemany page)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    engine = deps.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def commands(deps: Deps) -> Counter[str]:
    """Calls so far of each Redis command (INFO commandstats), scripts' own calls included; on a
    cluster, summed over its masters."""
    if is_cluster(deps.redis):
        nodes: dict[str, Any] = await deps.redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        every = list(nodes.values())
    else:
        every = [await deps.redis.info("commandstats")]
    calls: Counter[str] = Counter()
    for stats in every:
        calls.update({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()})
    return calls


async def _create(api: ApiClient, owner: TestUser, members: list[str]) -> dict[str, Any]:
    body = {"kind": "group", "title": "everyone", "participant_ids": members}
    created = await api.post("/conversations", owner, json=body)
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json
    return result


async def test_a_10000_member_group_costs_a_few_statements_and_one_event_a_member(
    api: ApiClient, deps: Deps
) -> None:
    owner = await api.user()
    small, members = await _users(deps, 9), await _users(deps, BIG - 1)
    with statements(deps) as few:
        await _create(api, owner, small)
    before = await commands(deps)
    with statements(deps) as many:
        group = await _create(api, owner, members)
    used = await commands(deps) - before
    assert len(group["participants"]) == BIG  # the answer has them all
    # The same statements as for 10 members, plus an INSERT page per 1,000 (insertmanyvalues);
    # one statement a member would be 10,000 more.
    inserts = sum(s.lstrip().upper().startswith("INSERT INTO PARTICIPANTS") for s in many)
    assert inserts <= BIG // 1000 + 1
    assert len(many) - inserts <= len(few) + 2, many
    # Redis: the conversation.created entry and publication a member is all that grows with them.
    assert used["xadd"] == BIG and used["publish"] + used["spublish"] == BIG
    # Everything else is a few commands (on a cluster, one publish script per slot group too).
    grows = ("xadd", "publish", "spublish", "sadd", "eval", "evalsha")
    assert sum(n for name, n in used.items() if name not in grows) < 50, used
    assert used["sadd"] <= BIG // 1000 + 1
    # The send mirror holds everyone (one seed script, past Lua's unpack limit of ~8,000).
    tag = shards_of(deps.redis).tag_of(uuid.UUID(group["id"]))
    mirrored = await deps.redis.smembers(membership.members_key(group["id"], tag))  # type: ignore[misc]
    assert len(mirrored) == BIG
    # Each member's copy of conversation.created names a few participants, the owner first.
    [created] = [e for e in await stream(deps.redis, members[-1]) if e.type == "conversation.created"]
    named = created.data.participants
    assert len(named) == ANNOUNCED_PARTICIPANTS and str(named[0].user_id) == owner.id


async def test_adding_thousands_is_one_event_per_newcomer_for_them(api: ApiClient, deps: Deps) -> None:
    owner = await api.user()
    first, later = await _users(deps, 1), await _users(deps, BIG - 2)
    group = await _create(api, owner, first)
    before = await commands(deps)
    with statements(deps) as seen:
        added = await api.post(f"/conversations/{group['id']}/participants", owner, json={"user_ids": later})
    used = await commands(deps) - before
    assert added.status_code == 200, added.text
    assert len(added.json["participants"]) == BIG
    assert len(seen) < 30, seen
    # The two already there hear of each newcomer; each newcomer of their own arrival only (not of
    # the other 9,997, which would be 10^8 entries).
    assert used["xadd"] == 2 * len(later) + len(later)
    newcomer = await stream(deps.redis, later[0])
    assert [(e.type, str(e.data.user_id)) for e in newcomer] == [("participant.added", later[0])]  # type: ignore[union-attr]
    told = [e for e in await stream(deps.redis, owner.id) if e.type == "participant.added"]
    assert len(told) >= deps.settings.event_stream_maxlen  # capped at MAXLEN ~, so at least that many


async def test_a_small_group_newcomer_still_hears_of_every_newcomer(api: ApiClient, deps: Deps) -> None:
    owner = await api.user()
    first, later = await _users(deps, 1), await _users(deps, 3)
    group = await _create(api, owner, first)
    added = await api.post(f"/conversations/{group['id']}/participants", owner, json={"user_ids": later})
    assert added.status_code == 200, added.text
    heard = [str(e.data.user_id) for e in await stream(deps.redis, later[0]) if e.type == "participant.added"]
    assert heard == later


async def test_typing_in_a_room_is_throttled_to_one_per_three_seconds(api: ApiClient, deps: Deps) -> None:
    owner = await api.user()
    small = await _create(api, owner, await _users(deps, 2))
    room = await _create(api, owner, await _users(deps, LARGE_GROUP_MEMBERS - 1))
    assert deps.settings.typing_interval_seconds < ROOM_TYPING_SECONDS
    intervals = ((small, deps.settings.typing_interval_seconds), (room, ROOM_TYPING_SECONDS))
    for group, seconds in intervals:
        held_ms = seconds * 1000
        typed = await api.post(f"/conversations/{group['id']}/typing", owner)
        assert typed.status_code == 204, typed.text
        # The slot's expiry is the throttle: read it rather than wait it out.
        ttl = await deps.redis.pttl(presence.typing_key(group["id"], owner.id))
        assert held_ms - 500 < ttl <= held_ms
    again = await api.post(f"/conversations/{room['id']}/typing", owner)
    assert again.status_code == 429 and again.headers["Retry-After"] == "3"


async def test_the_server_api_makes_a_group_past_asyncpgs_bind_parameter_limit(
    api: ApiClient, deps: Deps
) -> None:
    """PUT /server/conversations with 6,000 members: one INSERT of every row would pass asyncpg's
    32,767 bind parameters (six a row), which answered 503 as if the database were away."""
    count = 6_000
    users = await _users(deps, count)
    tag = uuid.uuid4().hex[:8]
    async with deps.sessions() as session:
        await session.execute(
            update(User),
            [{"id": uuid.UUID(u), "external_id": f"{tag}-{n}"} for n, u in enumerate(users)],
        )
        await session.commit()
    key = await server_key(deps)
    members = [f"{tag}-{n}" for n in range(count)]
    made = await api.put(f"/server/conversations/{tag}", key, json={"title": "all", "member_ids": members})
    assert made.status_code == 201, made.text
    assert len(made.json["participants"]) == count


async def test_in_a_room_the_members_hear_of_a_newcomer_once_in_the_rooms_stream(
    api: ApiClient, deps: Deps
) -> None:
    owner = await api.user()
    group = await _create(api, owner, await _users(deps, LARGE_GROUP_MEMBERS))
    later = await _users(deps, 3)
    before = await commands(deps)
    added = await api.post(f"/conversations/{group['id']}/participants", owner, json={"user_ids": later})
    assert added.status_code == 200, added.text
    used = await commands(deps) - before
    # Each newcomer's own entry, and one room entry for each of them: not one per member.
    assert used["xadd"] == 2 * len(later)
    heard = [e for e in await deps.redis.xrange(rooms.stream_key(group["id"]))]
    assert len(heard) == len(later)
    assert not [e for e in await stream(deps.redis, owner.id) if e.type == "participant.added"]
    mine = [(e.type, str(e.data.user_id)) for e in await stream(deps.redis, later[0])]  # type: ignore[union-attr]
    assert mine == [("participant.added", later[0])]
    removed = await api.delete(f"/conversations/{group['id']}/participants/{later[1]}", owner)
    assert removed.status_code in (200, 204), removed.text
    assert len(await deps.redis.xrange(rooms.stream_key(group["id"]))) == len(later) + 1
    gone = [e.type for e in await stream(deps.redis, later[1])]
    assert gone == ["participant.added", "participant.removed"]
