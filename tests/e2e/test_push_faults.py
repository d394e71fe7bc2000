"""A push process is stopped under load: its clients move to the other one and miss nothing.

web, worker and two push processes run from the Procfile. Four users sit in a group, two of them
on each push process, while a fifth keeps sending over HTTP. One push process gets SIGTERM in the
middle of it. Its clients must be closed with 1012, resume on the other process with their
last_event_id, and in the end every accepted message is stored once, in order, and was delivered
to every recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.protocol import check_frame
from tests.support.stack import Client, Process, Stack

RESTARTING = (1012, "server restarting; reconnect")
ENOUGH = 150  # messages each client must see before the kill, and again after it


@pytest.fixture(scope="module")
def fault_stack(stack: Stack) -> Stack:
    # The one sender outpaces RATE_LIMIT_SENDS_PER_USER's 20/second on purpose: load, not a limit.
    stack.start("web", RATE_LIMIT_SENDS_PER_USER="off")
    stack.start("worker")
    stack.start("push")
    stack.start("push")
    return stack


@pytest.fixture
def web(fault_stack: Stack) -> Process:
    return next(p for p in fault_stack.processes if p.name == "web")


@dataclass
class Listener:
    """A WebSocket client as an app would write one: on 1012 it resumes on the next push process."""

    name: str
    user: dict[str, Any]
    targets: list[Process]
    message_ids: list[str] = field(default_factory=list)  # message.created, in arrival order
    event_ids: list[str] = field(default_factory=list)
    closes: list[tuple[int | None, str | None]] = field(default_factory=list)
    reconnect_seconds: list[float] = field(default_factory=list)
    replayed: list[int] = field(default_factory=list)
    connections: int = 0
    last_event_id: str | None = None

    async def run(self) -> None:
        target, closed_at = 0, None
        while True:
            url = f"{self.targets[target].ws_url}?token={self.user['access_token']}"
            if self.last_event_id:
                url += f"&last_event_id={self.last_event_id}"
            try:
                async with connect(url, compression=None, open_timeout=3) as ws:
                    with contextlib.suppress(ConnectionClosed):
                        async for raw in ws:
                            self.receive(check_frame(orjson.loads(raw)), closed_at)
                    self.closes.append((ws.close_code, ws.close_reason))
            except OSError:  # the process is gone and its port refuses: try the next one
                await asyncio.sleep(0.05)
            else:
                closed_at = time.monotonic()
            target = (target + 1) % len(self.targets)

    def receive(self, frame: dict[str, Any], closed_at: float | None) -> None:
        if frame["type"] == "ready":
            self.connections += 1
            self.replayed.append(frame["replayed"])
            if closed_at is not None:
                self.reconnect_seconds.append(time.monotonic() - closed_at)
        elif frame["type"] == "message.created":
            self.message_ids.append(frame["data"]["id"])
        if "event_id" in frame:
            self.event_ids.append(frame["event_id"])
            self.last_event_id = frame["event_id"]

    def missing(self, accepted: list[str]) -> set[str]:
        return set(accepted) - set(self.message_ids)


async def until(condition: Any, what: str, timeout: float) -> None:
    """Await a condition, polling; fail naming it when it does not come true in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def history(client: Client, user: dict[str, Any], cid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = await client.http.get(
            f"/conversations/{cid}/messages",
            params={"after": items[-1]["seq"] if items else 0, "limit": 200},
            headers=user["headers"],
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        if not page.json()["has_more"]:
            return items


async def test_sigterm_on_one_push_process_loses_nothing(client: Client, fault_stack: Stack) -> None:
    push_a, push_b = (p for p in fault_stack.processes if p.name == "push")
    sender = await client.user()
    users = [await client.user() for _ in range(4)]
    group = await client.http.post(
        "/conversations",
        json={"kind": "group", "title": "fault", "participant_ids": [u["id"] for u in users]},
        headers=sender["headers"],
    )
    assert group.status_code == 201, group.text
    cid = group.json()["id"]
    # Two start on the process that will be stopped, two on the one that stays.
    listeners = [
        Listener(f"u{i}", user, [push_a, push_b] if i < 2 else [push_b, push_a])
        for i, user in enumerate(users)
    ]
    moving, staying = listeners[:2], listeners[2:]
    tasks = [asyncio.create_task(listener.run()) for listener in listeners]

    accepted: list[tuple[str, int]] = []  # (message id, seq) of every 202, in acceptance order
    statuses: Counter[int] = Counter()
    sending = True

    async def send() -> None:
        n = 0
        while sending:
            n += 1
            # A client_id makes a retried send idempotent; this test never retries, but apps do.
            answer = await client.http.post(
                f"/conversations/{cid}/messages",
                json={"body": f"load {n}", "client_id": f"fault-{n}"},
                headers=sender["headers"],
            )
            statuses[answer.status_code] += 1
            if answer.status_code == 202:
                accepted.append((answer.json()["id"], answer.json()["seq"]))

    def ids() -> list[str]:
        return [message_id for message_id, _ in accepted]

    started = time.monotonic()
    try:
        async with asyncio.timeout(40):
            await until(lambda: all(listener.connections == 1 for listener in listeners), "4 sockets", 5)
            sender_task = asyncio.create_task(send())
            try:
                await until(lambda: all(len(x.message_ids) >= ENOUGH for x in listeners), "load", 10)
                killed_after = len(accepted)
                push_a.signal(signal.SIGTERM)
                await until(lambda: all(x.connections == 2 for x in moving), "the moved clients back", 10)
                await until(
                    lambda: all(len(x.message_ids) >= killed_after + ENOUGH for x in listeners),
                    "load after the kill",
                    10,
                )
            finally:
                sending = False
                await sender_task
            send_seconds = time.monotonic() - started
            await until(lambda: not any(x.missing(ids()) for x in listeners), "every delivery", 15)
            stored: list[dict[str, Any]] = []

            async def stored_all() -> bool:
                stored[:] = await history(client, sender, cid)
                return len(stored) >= len(accepted)

            while not await stored_all():
                assert time.monotonic() - started < 38, f"{len(stored)} of {len(accepted)} stored"
                await asyncio.sleep(0.05)
            # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
            assert await asyncio.to_thread(push_a.popen.wait, 10) in (0, -signal.SIGTERM)
            assert "Traceback" not in push_a.output(), push_a.output()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Every send was accepted (a 5xx is always a bug), and stored exactly once in acceptance order.
    assert set(statuses) == {202}, statuses
    assert [m["id"] for m in stored] == ids()
    assert [m["seq"] for m in stored] == [seq for _, seq in accepted]
    assert [m["seq"] for m in stored] == sorted({m["seq"] for m in stored})
    # The killed process's clients were told to reconnect, once, and resumed on the other one.
    for listener in moving:
        assert listener.closes == [RESTARTING], listener.closes
        assert listener.connections == 2
    for listener in staying:
        assert listener.closes == [] and listener.connections == 1, listener.closes
    # Every recipient got every message; a repeat is allowed (at least once), going back is not.
    duplicates = 0
    for listener in listeners:
        assert not listener.missing(ids()), f"{listener.name} missed {len(listener.missing(ids()))}"
        assert set(listener.message_ids) <= set(ids())
        duplicates += len(listener.message_ids) - len(set(listener.message_ids))
        seen: set[str] = set()
        newest = (0, 0)
        for event_id in listener.event_ids:
            if event_id not in seen:
                major, minor = (int(part) for part in event_id.split("-"))
                assert (major, minor) > newest, f"{listener.name}: {event_id} after {newest}"
                seen.add(event_id)
                newest = (major, minor)
    frames = sum(len(x.message_ids) for x in listeners)
    reconnects = [s for x in moving for s in x.reconnect_seconds]
    print(
        f"\npush fault: {len(accepted)} messages accepted in {send_seconds:.1f} s "
        f"({len(accepted) / send_seconds:.0f}/s) "
        f"(SIGTERM after {killed_after}); {frames} message.created frames to 4 clients, "
        f"{duplicates} duplicates; moved clients closed {moving[0].closes[0]}, resumed with "
        f"{[x.replayed[-1] for x in moving]} replayed, reconnect {max(reconnects) * 1000:.0f} ms (max)"
    )
