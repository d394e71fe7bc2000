"""The product's cluster client on a real Redis Cluster, where redis-py's own bookkeeping can fail a
pipeline that Redis ran.

One coroutine's pipeline that meets a dead node closes the shared client (`aclose`, which empties its
default node) and retries. Another coroutine's pipeline in flight at that moment has its
answers back, then reads the default node's name to decide whether to replace it, and raised
`AttributeError: 'NoneType' object has no attribute 'name'`: the answers were lost and, being no
Redis error, the exception ended the worker's claim loop (CI's cluster failover test, with
`ACCEPT_DURABILITY=none`: the worker exited and its held jobs were never delivered).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
from redis.asyncio.cluster import ClusterNode

pytestmark = pytest.mark.e2e


async def test_a_pipeline_keeps_its_answers_when_another_closes_the_client_meanwhile(
    cluster_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = ClusterNode.execute_pipeline
    down: list[str] = []

    async def one_node_down(node: ClusterNode, commands: list[Any]) -> bool:
        if not down or down == [node.name]:
            # The node this pipeline finds dead answers each of its commands with the error.
            down[:] = [node.name]
            for command in commands:
                command.result = redis.exceptions.ConnectionError("Connection refused.")
            failed = True
        else:
            failed = await run(node, commands)
        # What a concurrent pipeline's retry does to the shared client while this one awaits.
        cluster_client.nodes_manager.default_node = None
        return failed

    keys = [f"key-{n}" for n in range(30)]
    monkeypatch.setattr(ClusterNode, "execute_pipeline", one_node_down)
    async with cluster_client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.incr(key)
        answers = await pipe.execute(raise_on_error=False)
    monkeypatch.undo()
    # The live nodes' answers come back, the dead one's as its error, as redis-py means them to.
    refused = [a for a in answers if isinstance(a, redis.exceptions.ConnectionError)]
    assert refused and len(refused) < len(keys)
    assert all(a == 1 for a in answers if a not in refused)
    stored = [await cluster_client.get(key) for key in keys]
    assert [s is not None for s in stored] == [a == 1 for a in answers]


async def test_a_command_runs_after_the_client_lost_its_default_node(cluster_client: Any) -> None:
    cluster_client.nodes_manager.default_node = None
    assert await cluster_client.set("plain", "1")
    assert await cluster_client.get("plain") == b"1"
