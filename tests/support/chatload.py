"""Chat clients under load, written as an app would write them, for the fault tests and the soak run.

- `Sender` sends into one conversation, one message at a time, each with a client_id of its own.
  A send that was not accepted (a `503`, a dropped connection) is sent again with the same
  client_id until it is, so each message is accepted once and the order of the `202`s is the
  order it sent in. It retries after `retry_delay` (0.1 s), sooner than the `Retry-After: 2` asks,
  on purpose: a fault test wants the outage probed many times. Every answer is counted, and
  anything but a `202` or a well-formed `503` (problem+json with `Retry-After`) is kept as an
  anomaly.
- `Listener` holds one user's WebSocket and resumes it with the last `event_id` after any close:
  at once after `1012`, with exponential back-off and jitter after `1011` or a refused connection.
  It de-duplicates `message.created` by message id and checks that `event_id`s only increase.
- `reconcile` holds Postgres against what was accepted: stored exactly once, in acceptance order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Accepted:
    message_id: str
    seq: int
    at: float  # time.monotonic() when the 202 arrived


async def register(http: aiohttp.ClientSession, prefix: str = "f") -> dict[str, Any]:
    """A new user, logged in: its id, username, access token and the headers that carry it."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    body = {"username": name, "password": "fault-and-soak-pass"}
    async with http.post("/api/v1/auth/register", json=body) as registered:
        assert registered.status == 201, await registered.text()
        user: dict[str, Any] = await registered.json()
    async with http.post("/api/v1/auth/login", json=body) as login:
        assert login.status == 200, await login.text()
        token = (await login.json())["access_token"]
    user |= {"username": name, "token": token, "headers": {"Authorization": f"Bearer {token}"}}
    return user


async def conversation(
    http: aiohttp.ClientSession,
    creator: dict[str, Any],
    others: list[dict[str, Any]],
    title: str | None = None,
) -> str:
    """A direct conversation (one other, no title) or a group; its id."""
    body: dict[str, Any] = {"kind": "group", "title": title} if title else {"kind": "direct"}
    body["participant_ids"] = [u["id"] for u in others]
    async with http.post("/api/v1/conversations", json=body, headers=creator["headers"]) as made:
        assert made.status in (200, 201), await made.text()
        cid: str = (await made.json())["id"]
    return cid


class Sender:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        user: dict[str, Any],
        conversation_id: str,
        name: str,
        *,
        rate: float = 0,
        retry_delay: float = 0.1,
        request_timeout: float = 10,
    ) -> None:
        self.http = http
        self.user = user
        self.conversation_id = conversation_id
        self.name = name
        self.rate = rate  # messages per second, 0 for back to back
        self.retry_delay = retry_delay
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.accepted: list[Accepted] = []
        self.statuses: Counter[str] = Counter()
        self.anomalies: list[str] = []
        self.abandoned = 0
        self.answers: list[tuple[float, str]] = []  # (monotonic time, status) of every attempt

    async def run(self, stop: asyncio.Event, give_up_seconds: float = 15) -> None:
        """Send until `stop` is set; the message in flight then is still seen through to its 202."""
        url = f"/api/v1/conversations/{self.conversation_id}/messages"
        started = time.monotonic()
        n = 0
        while not stop.is_set():
            n += 1
            if self.rate:
                # A steady rate: message n leaves at n / rate, at once when behind.
                await asyncio.sleep(max(0.0, started + n / self.rate - time.monotonic()))
            payload = {"body": f"{self.name} {n}", "client_id": f"{self.name}-{n}"}
            first_try = time.monotonic()
            while not await self._send(url, payload):
                if time.monotonic() - first_try > give_up_seconds:
                    self.abandoned += 1
                    break
                await asyncio.sleep(self.retry_delay)

    async def _send(self, url: str, payload: dict[str, str]) -> bool:
        """One attempt; True when the message was accepted (or can never be)."""
        try:
            async with self.http.post(
                url, json=payload, headers=self.user["headers"], timeout=self.timeout
            ) as answer:
                status = answer.status
                body = await answer.read()
                headers = answer.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._count(type(exc).__name__)
            self.anomalies.append(f"{payload['client_id']}: {type(exc).__name__}: {exc}")
            return False
        self._count(str(status))
        if status == 202:
            accepted = orjson.loads(body)
            self.accepted.append(Accepted(accepted["id"], accepted["seq"], time.monotonic()))
            return True
        if status == 503:
            problem = problem_of(headers, body)
            if problem:
                self.anomalies.append(f"{payload['client_id']}: 503 {problem}")
            return False
        self.anomalies.append(f"{payload['client_id']}: {status} {body[:300]!r}")
        return status not in (429,) and status < 500  # a 4xx other than 429 will not change

    def _count(self, status: str) -> None:
        self.statuses[status] += 1
        self.answers.append((time.monotonic(), status))


def problem_of(headers: Any, body: bytes) -> str:
    """What is wrong with a 503 (empty when it is problem+json with status, title, detail and Retry-After)."""
    wrong = []
    if not headers.get("Content-Type", "").startswith(PROBLEM):
        wrong.append(f"Content-Type {headers.get('Content-Type')!r}")
    retry_after = headers.get("Retry-After", "")
    if not retry_after.isdigit():
        wrong.append(f"Retry-After {retry_after!r}")
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "; ".join([*wrong, f"body {body[:200]!r}"])
    if problem.get("status") != 503 or not problem.get("title") or not problem.get("detail"):
        wrong.append(f"body {problem}")
    return "; ".join(wrong)


@dataclass
class Listener:
    user: dict[str, Any]
    push_ws_urls: list[str]
    name: str = ""
    messages: dict[str, int] = field(default_factory=dict)  # message id -> its seq, once per message
    frames: int = 0  # message.created frames, repeats included
    events: int = 0  # distinct event ids, of every type
    closes: Counter[tuple[int | None, str | None]] = field(default_factory=Counter)
    refused: int = 0  # connection attempts that did not reach a WebSocket
    connections: int = 0  # ready frames
    replayed: list[int] = field(default_factory=list)
    resyncs: int = 0
    backwards: list[str] = field(default_factory=list)  # event ids that went back
    last_event_id: str | None = None
    live: bool = False
    _newest: tuple[int, int] = (0, 0)
    _seen: set[str] = field(default_factory=set)

    @property
    def repeats(self) -> int:
        return self.frames - len(self.messages)

    async def run(self) -> None:
        """Connect and resume forever (cancel the task to stop)."""
        delay, target = 0.1, 0
        while True:
            url = f"{self.push_ws_urls[target]}?token={self.user['token']}"
            if self.last_event_id:
                url += f"&last_event_id={self.last_event_id}"
            code: int | None = None
            try:
                async with connect(url, compression=None, open_timeout=5, max_size=2**22) as ws:
                    with contextlib.suppress(ConnectionClosed):
                        async for raw in ws:
                            if self._receive(orjson.loads(raw)):
                                delay = 0.1
                    code = ws.close_code
                    self.closes[(code, ws.close_reason)] += 1
            except (OSError, InvalidHandshake, TimeoutError):
                self.refused += 1
            finally:
                self.live = False
            target = (target + 1) % len(self.push_ws_urls)
            if code == 1012 or code == 4408:
                continue  # restarting or too slow: resume at once, with last_event_id
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)

    def _receive(self, frame: dict[str, Any]) -> bool:
        """Take one frame; True when it was `ready`."""
        kind = frame.get("type")
        if kind == "ready":
            self.connections += 1
            self.replayed.append(frame["replayed"])
            self.live = True
            return True
        if kind == "resync_required":
            self.resyncs += 1
        event_id = frame.get("event_id")
        if event_id is not None and event_id not in self._seen:
            # A repeat of a seen event is allowed (at least once); a new one older than the newest
            # would be a gap filled late: events arrive in order.
            self._seen.add(event_id)
            self.events += 1
            major, minor = (int(part) for part in event_id.split("-"))
            if (major, minor) > self._newest:
                self._newest = (major, minor)
                self.last_event_id = event_id
            else:
                self.backwards.append(event_id)
        if kind == "message.created":
            self.frames += 1
            self.messages.setdefault(frame["data"]["id"], frame["data"]["seq"])
        return False

    def missing(self, expected: set[str]) -> set[str]:
        return expected - self.messages.keys()


@dataclass
class Reconciliation:
    accepted: int
    stored: int
    lost: list[str]
    duplicated: int
    extra: list[str]
    out_of_order: list[str]

    @property
    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} accepted but not stored: {self.lost[:5]}")
        if self.duplicated:
            found.append(f"{self.duplicated} stored more than once")
        if self.extra:
            found.append(f"{len(self.extra)} stored but never accepted: {self.extra[:5]}")
        if self.out_of_order:
            found.append(f"not in acceptance order: {self.out_of_order[:5]}")
        return found


async def stored_count(dsn: str, message_ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        ids = [uuid.UUID(m) for m in message_ids]
        return int(await conn.fetchval("SELECT count(*) FROM messages WHERE id = ANY($1)", ids))
    finally:
        await conn.close()


async def reconcile(dsn: str, accepted: dict[str, list[Accepted]]) -> Reconciliation:
    """Postgres against the 202s, per conversation (`accepted` in acceptance order)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT conversation_id, id, seq, sender_id, client_id FROM messages"
            " WHERE conversation_id = ANY($1) ORDER BY conversation_id, seq",
            [uuid.UUID(c) for c in accepted],
        )
    finally:
        await conn.close()
    stored: dict[str, list[tuple[str, int]]] = {c: [] for c in accepted}
    copies: Counter[tuple[str, str, str | None]] = Counter()
    for row in rows:
        stored[str(row["conversation_id"])].append((str(row["id"]), row["seq"]))
        # The same message twice would be two rows for one sender and client_id (ids are unique).
        copies[(str(row["conversation_id"]), str(row["sender_id"]), row["client_id"] or str(row["id"]))] += 1
    lost: list[str] = []
    extra: list[str] = []
    out_of_order: list[str] = []
    for cid, sent in accepted.items():
        ids = {a.message_id for a in sent}
        kept = {message_id for message_id, _ in stored[cid]}
        lost += sorted(ids - kept)
        extra += sorted(kept - ids)
        # Stored by seq, they are the 202s in the order they came, under the seq each 202 gave.
        in_order = [(a.message_id, a.seq) for a in sent]
        seqs = [a.seq for a in sent]
        if [s for s in stored[cid] if s[0] in ids] != in_order or seqs != sorted(set(seqs)):
            out_of_order.append(cid)
    return Reconciliation(
        accepted=sum(len(sent) for sent in accepted.values()),
        stored=len(rows),
        lost=lost,
        duplicated=sum(n - 1 for n in copies.values() if n > 1),
        extra=extra,
        out_of_order=out_of_order,
    )


async def until(condition: Any, what: str, timeout: float, every: float = 0.05) -> float:
    """Poll a (possibly async) condition; the monotonic time it came true. Fails naming it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
