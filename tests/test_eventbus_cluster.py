"""Events, typing, orders and presence on a real Redis Cluster (3 masters, one replica each).

A user's keys share their slot, an event for many users is one script call per slot group, and
everything is published with SPUBLISH: each sharded message reaches a subscriber on its slot's
master, and no PUBLISH (which a cluster broadcasts to every node) is issued at all.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from chat.domain.webhooks import offline
from chat.realtime import eventbus, presence, usercontrol
from chat.realtime.eventbus import EVENT_FIELD, RedisPublisher, channel, stream_key
from chat.realtime.events import Typing, UserRef, encode, frame
from push.sharded import ShardedChannels
from tests.support.messages import message_created
from tests.support.rediscluster import RedisClusterProcess

pytestmark = pytest.mark.e2e

USERS = 50


class Inbox:
    """What a sharded subscriber hears, by channel."""

    def __init__(self) -> None:
        self.messages: dict[str, list[bytes]] = {}
        self.lost: list[str] = []

    def message(self, name: str, data: bytes) -> None:
        self.messages.setdefault(name, []).append(data)

    def gone(self, names: list[str]) -> None:
        self.lost += names

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while sum(len(m) for m in self.messages.values()) < count:
                await asyncio.sleep(0.01)


def users_over_slots(count: int) -> list[uuid.UUID]:
    # Distinct slots, drawn until so: 50 random users share a slot about one time in 15.
    by_slot: dict[int, uuid.UUID] = {}
    while len(by_slot) < count:
        user = uuid.uuid4()
        by_slot.setdefault(eventbus.slot_of(user), user)
    users = list(by_slot.values())
    return users


def commands(cluster: RedisClusterProcess, name: str) -> int:
    """How many times the masters ran `name` (INFO commandstats), summed."""
    total = 0
    for node in cluster.nodes():
        if node.role == "master" and not node.failed:
            with redis.Redis(port=node.port) as one:
                stats: dict[str, Any] = one.info("commandstats")
                total += int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
    return total


def test_a_users_keys_share_their_slot() -> None:
    user = uuid.uuid4()
    names = [
        stream_key(user),
        channel(user),
        presence.presence_key(user),
        presence.last_seen_key(user),
    ]
    slots = {key_slot(name.encode()) for name in names}
    assert slots == {eventbus.slot_of(user)}
    assert eventbus.user_of_channel(channel(user)) == str(user)


async def test_an_event_to_50_users_lands_in_every_stream_and_reaches_every_shard(
    cluster: RedisClusterProcess, cluster_client: Any
) -> None:
    users = users_over_slots(USERS)
    inbox = Inbox()
    subscriber = ShardedChannels(cluster_client, inbox.message, inbox.gone)
    try:
        for user in users:
            await subscriber.subscribe(channel(user))
        assert sorted(subscriber.nodes.values()) != [] and sum(subscriber.nodes.values()) == USERS
        assert len(subscriber.nodes) == 3  # 50 users over 16384 slots: every master has some
        publisher = RedisPublisher(cluster_client, stream_maxlen=100)
        publishes_before, spublishes_before = commands(cluster, "publish"), commands(cluster, "spublish")
        evals_before = commands(cluster, "eval")

        event = message_created(uuid.uuid4(), 1, "to fifty")
        ids = await publisher.publish(event, users)

        assert len(ids) == USERS
        await inbox.until(USERS)
        for user, event_id in zip(users, ids, strict=True):
            [(entry_id, fields)] = await cluster_client.xrange(stream_key(user))
            assert entry_id.decode() == event_id and fields[EVENT_FIELD] == encode(event)
            assert inbox.messages[channel(user)] == [frame(event_id, encode(event))]
        # One EVAL a slot group (here, a user), SPUBLISH inside it, no PUBLISH anywhere.
        assert commands(cluster, "eval") - evals_before == USERS
        assert commands(cluster, "spublish") - spublishes_before == USERS
        assert commands(cluster, "publish") == publishes_before
        assert inbox.lost == []
    finally:
        await subscriber.close()


async def test_users_sharing_a_slot_group_take_one_call_and_staging_goes_through_a_cluster_pipeline(
    cluster: RedisClusterProcess, cluster_client: Any
) -> None:
    # Users whose ids share a hash tag's slot: the same id twice is the plainest such group, but
    # recipients are de-duplicated; so two ids found with one slot.
    by_slot: dict[int, uuid.UUID] = {}
    pair: tuple[uuid.UUID, uuid.UUID] | None = None
    while pair is None:
        user = uuid.uuid4()
        slot = eventbus.slot_of(user)
        if slot in by_slot:
            pair = (by_slot[slot], user)
        by_slot[slot] = user
    loner = uuid.uuid4()
    assert eventbus.by_slot([*pair, loner]) == [list(pair), [loner]]
    publisher = RedisPublisher(cluster_client, stream_maxlen=100)
    evals_before = commands(cluster, "eval")
    first, second = message_created(uuid.uuid4(), 1, "one"), message_created(uuid.uuid4(), 2, "two")
    await publisher.publish_many([(first, [*pair, loner]), (second, [loner])])
    assert commands(cluster, "eval") - evals_before == 3  # the pair's group, the loner twice
    for user in pair:
        assert [f[EVENT_FIELD] for _, f in await cluster_client.xrange(stream_key(user))] == [encode(first)]
    stored = [f[EVENT_FIELD] for _, f in await cluster_client.xrange(stream_key(loner))]
    assert stored == [encode(first), encode(second)]
    # The api's path: one Redis script call when every recipient is in one slot.
    ids = await publisher.publish(second, list(pair))
    assert [i.split("-")[0].isdigit() for i in ids] == [True, True]


async def test_typing_and_orders_are_sharded_messages(
    cluster: RedisClusterProcess, cluster_client: Any
) -> None:
    users = users_over_slots(6)
    inbox = Inbox()
    subscriber = ShardedChannels(cluster_client, inbox.message, inbox.gone)
    try:
        for user in users:
            await subscriber.subscribe(channel(user))
        publishes_before = commands(cluster, "publish")
        typing = Typing(conversation_id=uuid.uuid4(), data=UserRef(user_id=uuid.uuid4()))
        await RedisPublisher(cluster_client, stream_maxlen=100).publish_ephemeral(typing, users)
        await usercontrol.deactivated(cluster_client, users[0])
        await inbox.until(len(users) + 1)
        for user in users:
            assert inbox.messages[channel(user)][0] == encode(typing)
        order = usercontrol.encode(usercontrol.Order.DEACTIVATED).encode()
        assert inbox.messages[channel(users[0])][1] == order
        assert commands(cluster, "publish") == publishes_before
    finally:
        await subscriber.close()


async def test_presence_and_the_webhooks_offline_read_on_a_cluster(cluster_client: Any) -> None:
    users = users_over_slots(8)
    online = users[:5]
    for user in online:
        assert await presence.claim(cluster_client, user, "c1", ttl_seconds=30, cap=2)
    await presence.touch_many(cluster_client, [(u, "c1") for u in online], 30)
    assert await offline(cluster_client, users) == users[5:]
    live, seen = await presence.status(cluster_client, online[0])
    assert live and seen is not None
    await presence.leave(cluster_client, online[0], "c1")
    assert not (await presence.status(cluster_client, online[0]))[0]
    assert not (await presence.status(cluster_client, users[6]))[0]
