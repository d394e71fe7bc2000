"""A Redis primary killed under load (SIGKILL) and its replica promoted, on a Redis Cluster and
through Sentinel, with the Procfile's web, worker and push processes running throughout.

With ACCEPT_DURABILITY=replica every message answered `202` was on the replica before the answer,
so none is lost: each is stored exactly once, in acceptance order, and reaches every recipient.
With the default (`none`) a crash can lose what the replica had not received yet; the test says
how many (the closing line of each run: lost, duplicated, recovery seconds) and checks what must
hold anyway: nothing stored twice, no seq handed out twice, no process restarted.

The killed server is started again after the failover, as an orchestrator would: it comes back as
the new primary's replica, which `replica` durability needs to confirm writes again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chat.domain.sequence import counter_key
from chat.jobqueue.shards import Shards
from tests.support.chatload import reconcile, until
from tests.support.faultchat import Chat, log_findings, reconciled
from tests.support.rediscluster import RedisClusterProcess, SentinelSetup
from tests.support.stack import Stack, stack_env

pytestmark = pytest.mark.e2e


async def _run(
    what: str,
    env: dict[str, str],
    workdir: Path,
    database: str,
    kill: Callable[[Chat], float],
    recover: Callable[[], None],
) -> tuple[Chat, Any, float, dict[str, float]]:
    """Load, kill, recover, drain: (the chat, its reconciliation, failover seconds, recovery seconds)."""
    stack = Stack({**stack_env(database), **env}, workdir)
    dsn = database.replace("postgresql+asyncpg://", "postgresql://")
    chat: Chat | None = None
    try:
        web, _, push = stack.start("web"), stack.start("worker"), stack.start("push")
        pids = [p.popen.pid for p in stack.processes]
        async with asyncio.timeout(150), aiohttp.ClientSession(base_url=web.url) as http:
            chat = await Chat.build(http, push)
            chat.listen()
            await until(lambda: all(x.live for x in chat.listeners), "every socket ready", 15)
            stop = asyncio.Event()
            chat.send(chat.senders, stop)
            await until(lambda: all(len(x.messages) >= 150 for x in chat.listeners), "load before", 20)
            killed_at = time.monotonic()
            failover = await asyncio.to_thread(kill, chat)
            await asyncio.to_thread(recover)
            recovered_at = time.monotonic()

            def accepted_after(at: float) -> bool:
                return all(any(a.at > at for a in s.accepted) for s in chat.senders)

            back = await until(lambda: accepted_after(recovered_at), "a 202 for every sender again", 30)
            await until(
                lambda: all(len([a for a in s.accepted if a.at > recovered_at]) >= 60 for s in chat.senders),
                "sends after the failover",
                30,
            )
            stop.set()
            await asyncio.gather(*chat.tasks[len(chat.listeners) :])
            ids = chat.accepted_ids()
            rec = await reconcile_when_drained(dsn, chat, ids)
            # Every stored message reaches every recipient (what a crash lost was never stored).
            lost = set(rec.lost)
            await until(
                lambda: not any(x.missing(chat.expected(x) - lost) for x in chat.listeners),
                "every delivery",
                30,
            )
        await chat.stop()
        # What a sender saw: the longest wait between two 202s (the failover, and for replica
        # durability until the restarted server replicates again).
        gaps = [b.at - a.at for s in chat.senders for a, b in zip(s.accepted, s.accepted[1:], strict=False)]
        recovery = {
            "longest wait for a 202": round(max(gaps), 1),
            "until restarted": round(back - killed_at, 1),
        }
        print(
            reconciled(
                what, chat, rec, f"failover {failover:.1f} s; recovery {recovery}; {log_findings(stack)}"
            )
        )
        # Nobody restarted a process: the same ones serve, and rode out the failover themselves.
        assert [p.popen.pid for p in stack.processes] == pids
        assert all(p.popen.poll() is None for p in stack.processes), log_findings(stack)
        assert set(chat.statuses()) <= {"202", "503"}, chat.anomalies()[:10]
        return chat, rec, failover, recovery
    finally:
        if chat is not None:
            await chat.stop()
        stack.stop_all()


async def reconcile_when_drained(dsn: str, chat: Chat, ids: list[str]) -> Any:
    """What Postgres holds against what was accepted, once the queue stops moving."""
    from tests.support.chatload import stored_count

    last, steady = -1, 0.0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        stored = await stored_count(dsn, ids)
        if stored == len(ids):
            break
        if stored != last:
            last, steady = stored, time.monotonic()
        elif time.monotonic() - steady > 8:
            break  # nothing more arrives: the rest was lost with the primary
        await asyncio.sleep(0.2)
    return await reconcile(dsn, chat.accepted())


def _group_master(cluster: RedisClusterProcess, chat: Chat) -> int:
    """The primary holding the group conversation's shard (its counter, queue and jobs)."""
    group = next(cid for cid, members in chat.members.items() if len(members) == 4)
    tag = Shards(16, True).tag_of(uuid.UUID(group))
    return cluster.master_for_key(counter_key(group, tag))


@pytest.mark.parametrize("durability", ["replica", "none"])
async def test_a_cluster_primary_killed_under_load(
    durability: str, e2e_database: str, tmp_path: Path
) -> None:
    cluster = RedisClusterProcess(tmp_path / "cluster")
    killed: list[int] = []

    def kill(chat: Chat) -> float:
        port = _group_master(cluster, chat)
        killed.append(port)
        cluster.kill(port)
        return cluster.wait_failover(port)

    def recover() -> None:
        cluster.restart(killed[0])

    env = {
        "REDIS_MODE": "cluster",
        "REDIS_URL": cluster.url,
        "ACCEPT_DURABILITY": durability,
        "ACCEPT_REPLICA_TIMEOUT_MS": "1000",
    }
    try:
        chat, rec, _, _ = await _run(f"cluster, {durability}", env, tmp_path, e2e_database, kill, recover)
    finally:
        cluster.stop()
    _check(durability, chat, rec)


@pytest.mark.parametrize("durability", ["replica", "none"])
async def test_a_sentinel_master_killed_under_load(
    durability: str, e2e_database: str, tmp_path: Path
) -> None:
    sentinels = SentinelSetup(tmp_path / "sentinel")

    def kill(chat: Chat) -> float:
        sentinels.kill_master()
        return sentinels.wait_failover()

    env = {
        "REDIS_MODE": "sentinel",
        "REDIS_URL": sentinels.sentinel_url,
        "REDIS_SENTINEL_MASTER": sentinels.master_name,
        "ACCEPT_DURABILITY": durability,
        "ACCEPT_REPLICA_TIMEOUT_MS": "1000",
    }
    try:
        chat, rec, _, _ = await _run(
            f"sentinel, {durability}", env, tmp_path, e2e_database, kill, sentinels.restart_killed
        )
    finally:
        sentinels.stop()
    _check(durability, chat, rec)


def _check(durability: str, chat: Chat, rec: Any) -> None:
    # Whatever the durability: nothing stored twice, and no seq given to two messages.
    assert rec.duplicated == 0
    assert not rec.extra
    if durability == "replica":
        # Every 202 was on the replica first: stored once, in acceptance order, delivered to all.
        assert rec.problems == [], rec.problems
        assert chat.missing() == {}
