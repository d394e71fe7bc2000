"""The scenarios of `make bench`, each against the running web, worker and push processes.

Each returns a flat dict of figures (rates per second, latencies in ms, CPU ms per message or per
frame for each process and for Postgres and Redis apart, peak RSS in MB) for the table and the
JSON file.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis import asyncio as aioredis

from bench.clients import Client, Tracker, User
from bench.meter import Meter, Window, latency_ms

Figures = dict[str, Any]


@dataclass
class Pair:
    sender: User
    receiver: User
    conversation_id: str


@dataclass
class Bench:
    client: Client
    meter: Meter
    database_url: str  # plain postgresql:// for asyncpg

    async def stored(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM messages"))
        finally:
            await conn.close()

    async def pairs(self, count: int) -> list[Pair]:
        """`count` direct conversations, each with its receiver online."""
        senders = await self.client.users(count)
        receivers = await self.client.users(count)
        ids = await asyncio.gather(
            *(self.client.conversation(s, [r]) for s, r in zip(senders, receivers, strict=True))
        )
        await self.client.connect_all(receivers)
        return [Pair(s, r, c) for s, r, c in zip(senders, receivers, ids, strict=True)]


def _body(tag: str, n: int) -> str:
    return f"{tag}-{n}-{uuid.uuid4().hex[:8]}"


def _summary(tracker: Tracker, window: Window, units: int, *, unit: str = "msg") -> Figures:
    figures: Figures = {}
    for name, value in latency_ms(tracker.post_s).items():
        figures[f"POST {name} ms"] = value
    for name, value in latency_ms(tracker.delivery_s).items():
        figures[f"delivery {name} ms"] = value
    for name, value in window.per_unit_ms(units).items():
        figures[f"cpu ms/{unit} {name}"] = value
    for name, value in window.peak_rss_mb.items():
        figures[f"peak RSS MB {name}"] = value
    return figures


async def _drain(bench: Bench, stored_before: int, accepted: int, started: float) -> tuple[float, float]:
    """Wait until every accepted message is delivered and stored: (delivered/s, stored/s)."""
    tracker = bench.client.tracker
    await tracker.wait_delivered(accepted, within=120)
    deadline = time.perf_counter() + 120
    # The count is in Postgres: asking again is the only way to see it move.
    while (await bench.stored()) - stored_before < accepted and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    stored_at = time.perf_counter()
    delivered_s = len(tracker.delivery_s) / max(tracker.last_delivery - started, 1e-9)
    return delivered_s, accepted / max(stored_at - started, 1e-9)


async def throughput(bench: Bench, pairs: list[Pair], seconds: float, in_flight: int) -> Figures:
    """Closed loop: `in_flight` sends at all times, spread over the conversations, for `seconds`."""
    client = bench.client
    client.reset()
    stored_before = await bench.stored()
    turn = itertools.cycle(pairs)
    counter = itertools.count()
    with bench.meter.window() as window:
        started = time.perf_counter()
        stop_at = started + seconds

        async def lane() -> None:
            while time.perf_counter() < stop_at:
                pair = next(turn)
                await client.send(pair.sender, pair.conversation_id, _body("t", next(counter)))

        await asyncio.gather(*(lane() for _ in range(in_flight)))
        sent_for = time.perf_counter() - started
        accepted = client.tracker.accepted
        delivered_s, stored_s = await _drain(bench, stored_before, accepted, started)
    tracker = client.tracker
    stored = await bench.stored() - stored_before
    return {
        "accepted/s": accepted / sent_for,
        "stored/s": stored_s,
        "delivered/s": delivered_s,
        "accepted": accepted,
        "refused": sum(tracker.refused.values()),
        "lost": accepted - min(stored, len(tracker.delivery_s)),
    } | _summary(tracker, window, accepted)


async def open_loop(bench: Bench, pairs: list[Pair], rate: float, seconds: float) -> Figures:
    """Sends leave on a fixed schedule whatever the answers: latency with no backlog of our own."""
    client = bench.client
    client.reset()
    stored_before = await bench.stored()
    total = int(rate * seconds)
    with bench.meter.window() as window:
        started = time.perf_counter()
        sends: list[asyncio.Task[None]] = []
        for n, pair in zip(range(total), itertools.cycle(pairs), strict=False):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(client.send(pair.sender, pair.conversation_id, _body("o", n))))
        await asyncio.gather(*sends)
        accepted = client.tracker.accepted
        await _drain(bench, stored_before, accepted, started)
    tracker = client.tracker
    stored = await bench.stored() - stored_before
    return {
        "rate": rate,
        "accepted": accepted,
        "lost": accepted - min(stored, len(tracker.delivery_s)),
    } | _summary(tracker, window, accepted)


async def idle(bench: Bench, seconds: float) -> Figures:
    """Everything running, sockets open, nothing sent: the cost of waiting."""
    gc.collect()
    with bench.meter.window() as window:
        await asyncio.sleep(seconds)
    figures: Figures = {f"cpu % {name}": used * 100 / seconds for name, used in window.cpu_s.items()}
    figures["cpu % server"] = sum(figures[f"cpu % {name}"] for name in bench.meter.products)
    return figures


async def _fan_out(
    bench: Bench, send: Callable[[], Awaitable[None]], frames: int, *, within: float = 120
) -> tuple[Window, float, Tracker]:
    client = bench.client
    with bench.meter.window() as window:
        started = time.perf_counter()
        await send()
        await client.tracker.wait_delivered(frames, within)
        elapsed = client.tracker.last_delivery - started
    return window, len(client.tracker.delivery_s) / max(elapsed, 1e-9), client.tracker


def _closed(client: Client) -> Figures:
    """Sockets the server closed while the scenario ran, by close code (none is expected)."""
    return {f"sockets closed ({code})": count for code, count in sorted(client.closed.items(), key=str)}


async def connections(bench: Bench, users: int, devices: int) -> Figures:
    """`users` x `devices` sockets on one push process, then one message to each user."""
    client = bench.client
    client.reset()
    client.closed.clear()
    sender, *people = await client.users(users + 1)
    ids = await asyncio.gather(*(client.conversation(sender, [u]) for u in people))
    gc.collect()
    await asyncio.sleep(1)
    rss_before = bench.meter.rss_mb()["push"]
    handshakes = await client.connect_all([u for u in people for _ in range(devices)])
    await asyncio.sleep(2)  # let the last subscriptions settle before weighing
    rss_after = bench.meter.rss_mb()["push"]
    sockets = users * devices

    async def send() -> None:
        await asyncio.gather(*(client.send(sender, c, _body("c", n)) for n, c in enumerate(ids)))

    window, frames_s, tracker = await _fan_out(bench, send, sockets)
    figures: Figures = {
        "sockets": sockets,
        "handshakes/s": handshakes,
        "push RSS MB before": rss_before,
        "push RSS MB after": rss_after,
        "push KB/socket": (rss_after - rss_before) * 1024 / sockets,
        "frames": len(tracker.delivery_s),
        "lost": sockets - len(tracker.delivery_s),
        "frames/s": frames_s,
    }
    figures |= {k: v for k, v in _summary(tracker, window, sockets, unit="frame").items() if "POST" not in k}
    figures |= _closed(client)
    await client.disconnect_all()
    return figures


async def fan_out(bench: Bench, members: int, burst: int, messages: int, in_flight: int = 4) -> Figures:
    """A `members` group all online: a burst of `burst` messages, then `messages` more as fast as
    the api takes them; frames per second out of the one push process."""
    client = bench.client
    client.reset()
    client.closed.clear()
    group = await client.users(members)
    owner = group[0]
    cid = await client.conversation(owner, group[1:], title="bench fan-out")
    await client.connect_all(group)

    async def burst_send() -> None:
        await asyncio.gather(*(client.send(owner, cid, _body("b", n)) for n in range(burst)))

    window, _, tracker = await _fan_out(bench, burst_send, burst * members)
    figures: Figures = {
        "members": members,
        "burst frames": len(tracker.delivery_s),
        "burst lost": burst * members - len(tracker.delivery_s),
        "burst delivery p50 ms": latency_ms(tracker.delivery_s)["p50"],
        "burst delivery p99 ms": latency_ms(tracker.delivery_s)["p99"],
    }
    client.reset()
    counter = itertools.count()

    async def stream() -> None:
        async def lane() -> None:
            while (n := next(counter)) < messages:
                await client.send(owner, cid, _body("f", n))

        await asyncio.gather(*(lane() for _ in range(in_flight)))

    window, frames_s, tracker = await _fan_out(bench, stream, messages * members)
    figures |= {
        "frames": len(tracker.delivery_s),
        "lost": messages * members - len(tracker.delivery_s),
        "frames/s": frames_s,
    }
    figures |= {k: v for k, v in _summary(tracker, window, len(tracker.delivery_s), unit="frame").items()}
    figures |= _closed(client)
    await client.disconnect_all()
    return figures


async def _redis_counts(redis_url: str) -> Counter[str]:
    """Redis's CPU so far (INFO cpu, µs), its used_memory and how many times it ran each command
    (INFO commandstats: a script's own XADDs and PUBLISHes count under their names too)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        stats: dict[str, Any] = await client.info("commandstats")
        cpu: dict[str, Any] = await client.info("cpu")
        memory: dict[str, Any] = await client.info("memory")
    finally:
        await client.aclose()
    counts: Counter[str] = Counter()
    for name, value in stats.items():
        counts[name.removeprefix("cmdstat_")] = int(value["calls"])
    counts["cpu us"] = int((float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6)
    counts["used_memory"] = int(memory["used_memory"])
    return counts


async def big_group(
    bench: Bench, clients: list[Client], members: int, burst: int
) -> tuple[Figures, list[User]]:
    """One `members` group, every member online with one socket, the sockets dealt evenly over the
    push processes (`clients`, one each; bench.client only sends); a burst of `burst` messages.
    Delivery p50/p99 over all frames, frames/s out of each push process; and the users, for the
    cost curve."""
    client = bench.client
    for each in clients:
        each.closed.clear()
    group = await client.users(members, concurrency=32)
    owner = group[0]
    cid = await client.conversation(owner, group[1:], title="bench big group")
    share = -(-members // len(clients))
    for n, each in enumerate(clients):
        await each.connect_all(group[n * share : (n + 1) * share])
    client.reset()
    shares = [_Share(client.tracker) for _ in clients]
    for each, counted in zip(clients, shares, strict=True):
        each.tracker = counted

    async def send() -> None:
        await asyncio.gather(*(client.send(owner, cid, _body("g", n)) for n in range(burst)))

    window, frames_s, tracker = await _fan_out(bench, send, burst * members, within=300)
    elapsed = max(tracker.last_delivery - min(tracker.sent_at.values(), default=0.0), 1e-9)
    figures: Figures = {
        "members": members,
        "push processes": len(clients),
        "sockets a process": share,
        "messages": burst,
        "frames": len(tracker.delivery_s),
        "lost": burst * members - len(tracker.delivery_s),
        "frames/s": frames_s,
    }
    for n, counted in enumerate(shares):
        figures[f"frames/s push {n + 1}"] = counted.count / elapsed
    figures |= {k: v for k, v in _summary(tracker, window, len(tracker.delivery_s), unit="frame").items()}
    for each in clients:
        figures |= {f"{k} (push client)": v for k, v in _closed(each).items()}
        await each.disconnect_all()
    return figures, group


@dataclass
class _Share(Tracker):
    """One push process's clients' frames: counted here, timed by the scenario's one tracker."""

    inner: Tracker = field(default_factory=Tracker)
    count: int = 0

    def __init__(self, inner: Tracker) -> None:
        super().__init__()
        self.inner = inner
        self.count = 0

    def delivered(self, body: str, now: float) -> None:
        if body in self.inner.sent_at:
            self.count += 1
        self.inner.delivered(body, now)


async def redis_cost(
    bench: Bench, redis_url: str, users: list[User], sizes: list[int], messages: int
) -> dict[int, Figures]:
    """Redis CPU and memory per message as the group grows: for each size a new group, one member
    online (to know when the worker's publish ran), `messages` messages one at a time; INFO
    commandstats and used_memory before and after, divided by the messages."""
    client = bench.client
    curve: dict[int, Figures] = {}
    for size in sizes:
        # Small groups get more messages: their memory per message is near the allocator's noise.
        count = messages * max(1, 200 // size)
        group = users[:size]
        owner, listener = group[0], group[-1]
        cid = await client.conversation(owner, group[1:], title=f"bench cost {size}")
        await client.connect(listener)
        client.reset()
        await asyncio.sleep(0.5)
        before = await _redis_counts(redis_url)
        for n in range(count):
            await client.send(owner, cid, _body("r", n))
        await client.tracker.wait_delivered(count, within=120)
        used = await _redis_counts(redis_url)
        used.subtract(before)
        calls = sum(n for name, n in used.items() if name not in ("cpu us", "used_memory"))
        curve[size] = {
            "members": size,
            "messages": count,
            "redis cpu ms/msg": used["cpu us"] / 1000 / count,
            "redis bytes/msg": used["used_memory"] / count,
            "redis bytes/msg/member": used["used_memory"] / count / size,
            "xadd/msg": used["xadd"] / count,
            "publish/msg": (used["publish"] + used["spublish"]) / count,
            "redis commands/msg": calls / count,
            "delivery p50 ms": latency_ms(client.tracker.delivery_s)["p50"],
        }
        await client.disconnect_all()
    return curve
