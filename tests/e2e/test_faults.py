"""Faults on the real processes: Redis restarted mid-load.

The test runs web, worker and push from the Procfile on a Redis of its own, restarts it while
users send over HTTP and listen on WebSockets, and ends in a reconciliation: every `202` stored
exactly once, in acceptance order, and received by every recipient (who resumes with its last
`event_id`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import services
from tests.e2e.chatload import (
    Accepted,
    Listener,
    Reconciliation,
    Sender,
    conversation,
    reconcile,
    register,
    stored_count,
    until,
)
from tests.e2e.conftest import Process, Stack, stack_env

pytestmark = pytest.mark.e2e

RATE = 60  # messages/s per sender: three senders, about 180 messages/s in all


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.PrivateRedis]:
    server = services.private_redis(str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@dataclass
class Chat:
    """Four users on WebSockets in three conversations, each with one sender."""

    users: list[dict[str, Any]]
    members: dict[str, list[dict[str, Any]]]  # conversation id -> its participants
    senders: list[Sender] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def build(cls, http: aiohttp.ClientSession, push: Process) -> Chat:
        a, b, c, d = [await register(http) for _ in range(4)]
        group = await conversation(http, a, [b, c, d], title="faults")
        bc = await conversation(http, b, [c])
        da = await conversation(http, d, [a])
        chat = cls([a, b, c, d], {group: [a, b, c, d], bc: [b, c], da: [d, a]})
        chat.senders = [
            Sender(http, a, group, "group", rate=RATE),
            Sender(http, b, bc, "bc", rate=RATE),
            Sender(http, d, da, "da", rate=RATE),
        ]
        chat.listeners = [Listener(user, [push.ws_url], name=f"u{i}") for i, user in enumerate(chat.users)]
        return chat

    def listen(self) -> None:
        self.tasks += [asyncio.create_task(listener.run()) for listener in self.listeners]

    def send(self, senders: list[Sender], stop: asyncio.Event) -> None:
        self.tasks += [asyncio.create_task(sender.run(stop)) for sender in senders]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def accepted(self) -> dict[str, list[Accepted]]:
        return {s.conversation_id: s.accepted for s in self.senders}

    def accepted_ids(self) -> list[str]:
        return [a.message_id for s in self.senders for a in s.accepted]

    def expected(self, listener: Listener) -> set[str]:
        """The accepted messages of every conversation the listener's user is in."""
        return {
            a.message_id
            for s in self.senders
            if listener.user in self.members[s.conversation_id]
            for a in s.accepted
        }

    def missing(self) -> dict[str, int]:
        return {
            x.name: len(x.missing(self.expected(x))) for x in self.listeners if x.missing(self.expected(x))
        }

    def statuses(self) -> Counter[str]:
        return sum((s.statuses for s in self.senders), Counter())

    def anomalies(self) -> list[str]:
        return [a for s in self.senders for a in s.anomalies]


def log_findings(stack: Stack) -> dict[str, int]:
    """Tracebacks and 500s per process log, for the report."""
    found = {}
    for process in stack.processes:
        text = process.output()
        found[f"{process.name}-{process.port}"] = text.count("Traceback") + text.count("unhandled error")
    return found


async def get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any, bytes]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10), **kwargs) as answer:
        return answer.status, answer.headers, await answer.read()


def reconciled(what: str, chat: Chat, rec: Reconciliation, extra: str) -> str:
    statuses = dict(sorted(chat.statuses().items()))
    repeats = sum(x.repeats for x in chat.listeners)
    return (
        f"\n{what}: {rec.accepted} accepted, statuses {statuses}, {rec.stored} stored, "
        f"lost {len(rec.lost)}, duplicated {rec.duplicated}, extra {len(rec.extra)}, "
        f"undelivered {sum(chat.missing().values())}, repeated frames {repeats}; {extra}"
    )


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


async def _all_stored(dsn: str, ids: list[str]) -> bool:
    return await stored_count(dsn, ids) == len(ids)
