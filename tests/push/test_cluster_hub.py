"""The hub on a real Redis Cluster (3 masters, one replica each): sharded subscriptions per master,
and a master lost (killed, or handing its slots to its replica) restarts only the sockets of the
users whose channels it carried; they come back on the slot's new master and hear events again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chat.infra.redisclient import create_redis
from chat.realtime.eventbus import RedisPublisher, channel
from chat.realtime.rooms import FEEDS
from push.hub import Hub
from tests.support.fakesocket import Recorder
from tests.support.messages import message_created
from tests.support.rediscluster import RedisClusterProcess
from tests.support.settings import make_settings

pytestmark = pytest.mark.e2e

USERS = 50


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterProcess]:
    started = RedisClusterProcess(tmp_path)
    yield started
    started.stop()


@pytest.fixture
async def client(cluster: RedisClusterProcess) -> AsyncIterator[Any]:
    made = create_redis(make_settings(redis_url=cluster.url, redis_mode="cluster"))
    yield made
    await made.aclose()


async def everyone_hears(client: Any, sockets: dict[uuid.UUID, Recorder], body: str) -> None:
    event = message_created(uuid.uuid4(), 1, body)
    await RedisPublisher(client, stream_maxlen=100).publish(event, list(sockets))
    async with asyncio.timeout(5):
        while not all(any(body in f for f in s.frames) for s in sockets.values()):
            await asyncio.sleep(0.01)


async def joined(hub: Hub, users: list[uuid.UUID]) -> dict[uuid.UUID, Recorder]:
    sockets = {user: Recorder(str(user)) for user in users}
    for socket in sockets.values():
        await hub.join(socket)
    return sockets


def carried_by(cluster: RedisClusterProcess, users: list[uuid.UUID], master: int) -> list[uuid.UUID]:
    return [user for user in users if cluster.master_for_key(channel(user)) == master]


async def test_a_killed_master_restarts_only_its_users_and_they_come_back_on_its_replica(
    cluster: RedisClusterProcess, client: Any
) -> None:
    users = [uuid.uuid4() for _ in range(USERS)]
    hub = Hub(client)
    try:
        sockets = await joined(hub, users)
        assert hub._sharded is not None
        await hub._sharded_feeds(hub._sharded)  # subscribed beside the joins, not in them
        by_node = hub._sharded.nodes
        # Each user's channel, and the room feeds every push process listens to.
        assert len(by_node) == 3 and sum(by_node.values()) == USERS + FEEDS
        await everyone_hears(client, sockets, "before")

        victim = cluster.master_for_key(channel(users[0]))
        affected = carried_by(cluster, users, victim)
        others = [user for user in users if user not in affected]
        assert affected and others
        cluster.kill(victim)
        async with asyncio.timeout(5):  # the node's socket closes with the process: no timeout to wait
            for user in affected:
                await sockets[user].restarted.wait()
        failover = cluster.wait_failover(victim)
        assert not any(sockets[user].restarted.is_set() for user in others)
        assert hub.connections == len(others)

        # The restarted clients reconnect: their channels are subscribed on the slot's new master.
        again = await joined(hub, affected)
        await asyncio.wait_for(hub._sharded_feeds(hub._sharded), 10)
        assert sum(hub._sharded.nodes.values()) == USERS + FEEDS
        assert f"127.0.0.1:{victim}" not in hub._sharded.nodes
        await everyone_hears(client, {**{u: sockets[u] for u in others}, **again}, "after")
        assert not any(sockets[user].restarted.is_set() for user in others)
        assert not any(s.deactivations for s in sockets.values())
        print(f"failover {failover:.1f} s; {len(affected)} of {USERS} users restarted")
    finally:
        await hub.close()


async def test_a_master_handing_its_slots_to_its_replica_restarts_only_its_users(
    cluster: RedisClusterProcess, client: Any
) -> None:
    users = [uuid.uuid4() for _ in range(USERS)]
    hub = Hub(client)
    try:
        sockets = await joined(hub, users)
        await everyone_hears(client, sockets, "before")
        old = cluster.master_for_key(channel(users[0]))
        affected = carried_by(cluster, users, old)
        others = [user for user in users if user not in affected]
        [replica] = cluster.replicas_of(old)
        # A manual failover: the old master stays up, turns replica, and drops its shard channels
        # (Redis sends each subscriber `sunsubscribe` for them); the connection itself lives on.
        with redis.Redis(port=replica) as node:
            assert node.execute_command("CLUSTER", "FAILOVER") in (b"OK", "OK", True)
        async with asyncio.timeout(10):
            for user in affected:
                await sockets[user].restarted.wait()
        cluster.wait_ok(cluster.ports)
        assert not any(sockets[user].restarted.is_set() for user in others)

        again = await joined(hub, affected)
        assert hub._sharded is not None
        assert {hub._sharded.node_of(channel(u)) for u in affected} == {f"127.0.0.1:{replica}"}
        await everyone_hears(client, {**{u: sockets[u] for u in others}, **again}, "after")
        assert not any(sockets[user].restarted.is_set() for user in others)
    finally:
        await hub.close()
