"""The test support's Redis Cluster and Sentinel setups (tests/support/rediscluster.py), on their own.

No product code here: these say the topologies the product is tested on are what they claim, so a
failing cluster test of the product is the product's failure, not the harness's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.sentinel import Sentinel

from tests.support.rediscluster import SLOTS, RedisClusterProcess, SentinelSetup

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
# A key is written, then the test waits out appendfsync everysec before the kill, so a loss would be
# the failover's, not the missing fsync's.
AFTER_WRITE = 1.5
FAILOVER_WITHIN = 10.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterProcess]:
    started = RedisClusterProcess(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    started = SentinelSetup(tmp_path)
    yield started
    started.stop()


def test_the_cluster_starts_with_every_slot_served_and_a_key_lands_on_its_master(
    cluster: RedisClusterProcess,
) -> None:
    nodes = cluster.nodes()
    masters = [node for node in nodes if node.role == "master"]
    replicas = [node for node in nodes if node.role == "replica"]
    assert len(masters) == 3 and len(replicas) == 3
    # One replica for each master, not two on one and none on another.
    assert sorted(node.master_id or "" for node in replicas) == sorted(node.node_id for node in masters)
    owners = cluster.slot_owners()
    assert len(owners) == SLOTS and set(owners.values()) == {node.port for node in masters}
    assert cluster.url == f"redis://127.0.0.1:{cluster.ports[0]}/0"

    client = redis.RedisCluster.from_url(cluster.url)
    try:
        for n in range(30):
            client.set(f"key:{n}", str(n))
    finally:
        client.close()
    used = set()
    for n in range(30):
        port = cluster.master_for_key(f"key:{n}")
        used.add(port)
        direct = redis.Redis(port=port)
        try:
            assert direct.get(f"key:{n}") == str(n).encode()
        finally:
            direct.close()
    assert len(used) == 3  # thirty keys spread over every master

    cluster.flush()
    for node in masters:
        direct = redis.Redis(port=node.port)
        try:
            assert direct.dbsize() == 0
        finally:
            direct.close()


def test_a_killed_master_is_replaced_by_its_replica_with_the_key(cluster: RedisClusterProcess) -> None:
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        client.set("durable", "written before the crash")
        old = cluster.master_for_key("durable")
        (replica,) = cluster.replicas_of(old)
        time.sleep(AFTER_WRITE)

        cluster.kill(old)
        seconds = cluster.wait_failover(old)

        print(f"cluster: started in {cluster.start_seconds:.1f} s, failed over in {seconds:.1f} s")
        assert seconds < FAILOVER_WITHIN
        assert cluster.master_for_key("durable") == replica
        promoted = redis.Redis(port=replica)
        try:
            assert promoted.get("durable") == b"written before the crash"
        finally:
            promoted.close()
        # A cluster client that knew the old master finds the new one (MOVED, or a refreshed map).
        assert client.get("durable") == b"written before the crash"
        client.set("after", "1")
    finally:
        client.close()

    cluster.restart(old)
    # The old master comes back as a replica of the node that replaced it.
    back = next(node for node in cluster.nodes() if node.port == old)
    assert back.role == "replica"
    assert back.master_id == next(node.node_id for node in cluster.nodes() if node.port == replica)


def test_the_sentinels_fail_over_to_the_replica_with_the_key(sentinel_setup: SentinelSetup) -> None:
    assert (
        sentinel_setup.sentinel_url
        == "redis+sentinel://"
        + ",".join(f"127.0.0.1:{port}" for port in sentinel_setup.sentinel_ports)
        + "/0"
    )
    sentinel = Sentinel(sentinel_setup.sentinels, socket_timeout=1)  # type: ignore[no-untyped-call]
    old = sentinel.discover_master(sentinel_setup.master_name)  # type: ignore[no-untyped-call]
    master = sentinel.master_for(sentinel_setup.master_name, socket_timeout=1)  # type: ignore[no-untyped-call]
    try:
        master.set("durable", "written before the crash")
        time.sleep(AFTER_WRITE)

        assert sentinel_setup.kill_master() == old[1]
        seconds = sentinel_setup.wait_failover()

        print(f"sentinel: started in {sentinel_setup.start_seconds:.1f} s, failed over in {seconds:.1f} s")
        assert seconds < FAILOVER_WITHIN
        new = sentinel.discover_master(sentinel_setup.master_name)  # type: ignore[no-untyped-call]
        assert new != old and new[1] == sentinel_setup.replica_port
        # The same master_for client asks the sentinels again once its master is gone.
        assert master.get("durable") == b"written before the crash"
        master.set("after", "1")
    finally:
        master.close()
        for each in sentinel.sentinels:
            each.close()


def test_test_redis_mode_cluster_gives_the_run_a_cluster_of_its_own(tmp_path: Path) -> None:
    """What `make e2e-cluster` sets: the run starts a cluster, and the mode the settings and the
    processes' env get and the support's clients all name it as a cluster; a test's own server
    stays standalone."""
    script = """
import json, os
from tests.support import services
from tests.support.stack import E2E_REDIS_URL, stack_env, with_redis_mode
services.check_redis()
client = services.redis_client()
client.set("a", "1"); client.set("b", "2")
services.flush_redis()
print(json.dumps({
    "url": services.REDIS_URL,
    "e2e_url": E2E_REDIS_URL,
    "client": type(client).__name__,
    "async_client": type(services.async_redis_client()).__name__,
    "keys_after_flush": len(client.keys("*")),
    "run_mode": services.redis_mode_for(services.REDIS_URL),
    "own_server_mode": services.redis_mode_for("redis://127.0.0.1:1/0"),
    "stack_mode": with_redis_mode(stack_env("postgresql+asyncpg://x/y"))["REDIS_MODE"],
    "exported": os.environ["TEST_REDIS_MODE"],
}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_REDIS")}
    env["TEST_REDIS_MODE"] = "cluster"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["url"].endswith("/0") and seen["e2e_url"] == seen["url"]
    assert seen["client"] == "RedisCluster" and seen["async_client"] == "RedisCluster"
    assert seen["keys_after_flush"] == 0
    assert seen["run_mode"] == "cluster" and seen["own_server_mode"] == "standalone"
    assert seen["stack_mode"] == "cluster" and seen["exported"] == "cluster"
