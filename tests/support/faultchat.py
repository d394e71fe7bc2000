"""Chat under faults, for the fault tests: four users on WebSockets in three conversations, each
with one sender (`tests.support.chatload`), and the report lines the tests print."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support.chatload import Accepted, Listener, Reconciliation, Sender, conversation, register
from tests.support.stack import Process, Stack

RATE = 60  # messages/s per sender: three senders, about 180 messages/s in all


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
