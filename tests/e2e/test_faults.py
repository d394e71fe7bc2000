"""Faults on the real processes: Redis restarted mid-load, Postgres stopped mid-load.

Each test runs web, worker and push from the Procfile on servers of its own (a private Redis, and
for the Postgres outage a private Postgres cluster), breaks one of them while users send over HTTP
and listen on WebSockets, and ends in a reconciliation: every `202` stored exactly once, in
acceptance order, and received by every recipient (who resumes with its last `event_id`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import redis.asyncio

from chat.jobqueue.deadletters import HASH as DEAD_LETTERS
from tests.support import services
from tests.support.chatload import (
    problem_of,
    reconcile,
    stored_count,
    until,
)
from tests.support.faultchat import Chat, get, log_findings, reconciled
from tests.support.stack import Stack, stack_env


async def test_redis_restarted_mid_load_loses_nothing(
    e2e_database: str, own_redis: services.PrivateRedis, tmp_path: Path
) -> None:
    stack = Stack({**stack_env(e2e_database), "REDIS_URL": own_redis.url}, tmp_path)
    dsn = e2e_database.replace("postgresql+asyncpg://", "postgresql://")
    chat: Chat | None = None
    try:
        web, worker, push = stack.start("web"), stack.start("worker"), stack.start("push")
        pids = [p.popen.pid for p in stack.processes]
        async with asyncio.timeout(75), aiohttp.ClientSession(base_url=web.url) as http:
            chat = await Chat.build(http, push)
            chat.listen()
            await until(lambda: all(x.live for x in chat.listeners), "every socket ready", 10)
            stop = asyncio.Event()
            chat.send(chat.senders, stop)
            await until(lambda: all(len(x.messages) >= 300 for x in chat.listeners), "load before", 15)

            own_redis.stop()
            down_at = time.monotonic()
            await asyncio.sleep(1.5)
            ready_down = (await get(http, "/readyz"))[0], (await get(http, f"{push.url}/readyz"))[0]
            await asyncio.sleep(max(0.0, down_at + 3 - time.monotonic()))
            own_redis.start()
            up_at = time.monotonic()
            before_restart = len(chat.accepted_ids())

            # Every process carries on by itself: the api accepts again, the worker stores what it
            # accepts, the push process takes the sockets back. Each is timed from Redis's start.
            def first_after() -> list[str]:
                return [next((a.message_id for a in s.accepted if a.at > up_at), "") for s in chat.senders]

            web_at, worker_at, push_at = await asyncio.gather(
                until(lambda: all(first_after()), "a 202 for every sender", 15),
                until(
                    lambda: all(first_after()) and _all_stored(dsn, first_after()),
                    "those stored",
                    15,
                    every=0.1,
                ),
                until(
                    lambda: all(x.live and x.connections >= 2 for x in chat.listeners), "sockets resumed", 15
                ),
            )
            recovered = {
                k: round(t - up_at, 1) for k, t in (("web", web_at), ("worker", worker_at), ("push", push_at))
            }
            await until(
                lambda: all(len([a for a in s.accepted if a.at > up_at]) >= 200 for s in chat.senders),
                "sends accepted after the restart",
                15,
            )
            stop.set()
            await asyncio.gather(*chat.tasks[len(chat.listeners) :])
            await until(lambda: not chat.missing(), "every delivery", 20)
            ids = chat.accepted_ids()
            await until(lambda: _all_stored(dsn, ids), f"all {len(ids)} accepted stored", 20, every=0.2)
            rec = await reconcile(dsn, chat.accepted())
            ready_up = (await get(http, "/readyz"))[0], (await get(http, f"{push.url}/readyz"))[0]
            worker_metrics = (await get(http, f"{worker.url}/metrics"))[0]
        await chat.stop()

        statuses = chat.statuses()
        closes = sum((x.closes for x in chat.listeners), Counter())
        print(
            reconciled(
                "redis restart",
                chat,
                rec,
                f"{before_restart} accepted before the restart; recovery after Redis started (s): "
                f"{recovered}; sockets closed {dict(closes)}, replayed "
                f"{[x.replayed[-1] for x in chat.listeners]}; readyz web/push {ready_down} down, "
                f"{ready_up} after; tracebacks per log {log_findings(stack)}",
            )
        )
        # Only 202 and 503 (problem+json with Retry-After); never a 500, never a dropped request.
        assert set(statuses) <= {"202", "503"}, (statuses, chat.anomalies()[:10])
        assert statuses["503"] > 0, "the outage was never seen"
        assert chat.anomalies() == []
        assert not any(s.abandoned for s in chat.senders)
        # Stored once, in acceptance order, and delivered to everyone.
        assert rec.problems == [], rec.problems
        assert chat.missing() == {}
        assert [x.backwards for x in chat.listeners] == [[]] * 4
        # Sockets were told to come back (1011 or 1012), and did, with their last event id.
        for listener in chat.listeners:
            assert listener.closes and {code for code, _ in listener.closes} <= {1011, 1012}, listener.closes
            assert listener.resyncs == 0
        # Nobody restarted a process: the same ones serve again.
        assert [p.popen.pid for p in stack.processes] == pids
        assert all(p.popen.poll() is None for p in stack.processes), log_findings(stack)
        assert ready_down == (503, 503) and ready_up == (200, 200)
        assert worker_metrics == 200
        assert "unhandled error" not in web.output(), web.output()[-3000:]
    finally:
        if chat is not None:
            await chat.stop()
        stack.stop_all()


async def _all_stored(dsn: str, ids: list[str]) -> bool:
    return await stored_count(dsn, ids) == len(ids)


def make_admin(stack: Stack, username: str) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "chat.cli", "make-admin", username],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr


async def test_postgres_stopped_for_10_seconds_mid_load_loses_nothing(
    own_postgres: services.PrivatePostgres, own_redis: services.PrivateRedis, tmp_path: Path
) -> None:
    stack = Stack({**stack_env(own_postgres.url), "REDIS_URL": own_redis.url}, tmp_path)
    dsn = own_postgres.dsn
    chat: Chat | None = None
    try:
        web, _worker, push = stack.start("web"), stack.start("worker"), stack.start("push")
        async with asyncio.timeout(75), aiohttp.ClientSession(base_url=web.url) as http:
            chat = await Chat.build(http, push)
            admin = chat.users[0]
            make_admin(stack, admin["username"])
            group, fresh = chat.senders[0].conversation_id, chat.senders[2].conversation_id
            chat.listen()
            await until(lambda: all(x.live for x in chat.listeners), "every socket ready", 10)
            stop = asyncio.Event()
            # Two conversations carry messages before the outage; the third was created before
            # it but gets its first message during it.
            chat.send(chat.senders[:2], stop)
            await until(lambda: all(len(x.messages) >= 20 for x in chat.listeners), "load before", 15)

            reads: list[tuple[float, float, int, str]] = []  # (start, end, status, what is wrong)
            probes: list[tuple[float, str, int, bytes]] = []
            reading = asyncio.Event()

            async def read_history() -> None:
                while not reading.is_set():
                    started = time.monotonic()
                    status, headers, body = await get(
                        http, f"/api/v1/conversations/{group}/messages?limit=20", headers=admin["headers"]
                    )
                    wrong = problem_of(headers, body) if status == 503 else ""
                    reads.append((started, time.monotonic(), status, wrong))
                    await asyncio.sleep(0.2)

            async def probe_health() -> None:
                while not reading.is_set():
                    for path in ("/healthz", "/readyz"):
                        status, _, body = await get(http, path)
                        probes.append((time.monotonic(), path, status, body))
                    await asyncio.sleep(0.5)

            watchers = [asyncio.create_task(read_history()), asyncio.create_task(probe_health())]
            await asyncio.sleep(1)

            await asyncio.to_thread(own_postgres.stop)
            down_at = time.monotonic()
            chat.send(chat.senders[2:], stop)
            await asyncio.sleep(10)
            up_started = time.monotonic()
            await asyncio.to_thread(own_postgres.start)
            up_at = time.monotonic()
            outage_ids = chat.accepted_ids()

            # Recovery: from Postgres starting to everything accepted so far stored.
            backlog_at = await until(
                lambda: _all_stored(dsn, outage_ids), "the backlog stored", 30, every=0.1
            )
            await asyncio.sleep(max(0.0, up_at + 2 - time.monotonic()))  # and sends carry on after
            stop.set()
            await asyncio.gather(*chat.tasks[len(chat.listeners) :])
            ids = chat.accepted_ids()
            last_at = await until(lambda: _all_stored(dsn, ids), f"all {len(ids)} stored", 30, every=0.1)
            await until(lambda: reads and reads[-1][0] > up_at and reads[-1][2] == 200, "history again", 10)
            reading.set()
            await asyncio.gather(*watchers)
            await until(lambda: not chat.missing(), "every delivery", 20)
            rec = await reconcile(dsn, chat.accepted())

            dead = await _dead_letters(own_redis.url)
            status, _, body = await get(http, "/api/v1/admin/dead-letters", headers=admin["headers"])
            assert status == 200, body
            listed = orjson.loads(body)["items"]
            status, _, body = await get(http, "/api/v1/admin/queue", headers=admin["headers"])
            queue = orjson.loads(body)
        await chat.stop()

        during = [r for r in reads if r[0] > down_at and r[1] < up_started]
        after = [r for r in reads if r[0] > up_at]
        probes_down = [(path, status) for t, path, status, _ in probes if down_at + 0.5 < t < up_started]
        ready_body = next(
            orjson.loads(b) for t, p, s, b in probes if down_at < t < up_started and p == "/readyz"
        )
        fresh_statuses = next(s for s in chat.senders if s.conversation_id == fresh).statuses
        statuses = chat.statuses()
        print(
            reconciled(
                "postgres stop",
                chat,
                rec,
                f"{len(outage_ids)} accepted before Postgres was back "
                f"(the one created before the outage and first sent into during it: {dict(fresh_statuses)}); "
                f"recovery {backlog_at - up_at:.1f} s for the backlog, last accepted stored "
                f"{last_at - up_at:.1f} s after Postgres started; history during "
                f"{dict(Counter(r[2] for r in during))}, after {dict(Counter(r[2] for r in after))}; "
                f"probes during {dict(Counter(probes_down))}; dead letters {dead}; "
                f"queue after {queue}; tracebacks per log {log_findings(stack)}",
            )
        )
        # Sends need only Redis: every one accepted, during the outage too.
        assert set(statuses) == {"202"}, (statuses, chat.anomalies()[:10])
        assert not any(s.abandoned for s in chat.senders)
        assert len([a for a in chat.senders[2].accepted if down_at < a.at < up_started]) > 100
        # History reads are 503 problem+json with Retry-After while Postgres is away, 200 after.
        assert during and {r[2] for r in during} == {503}, during
        assert [r for r in during if r[3]] == []
        assert after[-1][2] == 200
        # Alive but not ready.
        assert set(probes_down) == {("/healthz", 200), ("/readyz", 503)}, probes_down
        assert ready_body["checks"]["redis"] == "ok" and ready_body["checks"]["database"] != "ok"
        # Stored once, in order, delivered, nothing in the dead letters.
        assert rec.problems == [], rec.problems
        assert chat.missing() == {}
        assert [x.backwards for x in chat.listeners] == [[]] * 4
        # The push process never needs Postgres: no socket was closed.
        assert [dict(x.closes) for x in chat.listeners] == [{}] * 4
        assert dead == 0 and listed == [] and queue["dead"] == 0
        assert backlog_at - up_at < 20
        assert all(p.popen.poll() is None for p in stack.processes), log_findings(stack)
        assert "unhandled error" not in web.output(), web.output()[-3000:]
    finally:
        if chat is not None:
            await chat.stop()
        stack.stop_all()


async def _dead_letters(url: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return int(await client.hlen(DEAD_LETTERS))
    finally:
        await client.aclose()
