"""A soak run: the real processes under a steady load for minutes, watched for memory growth and loss.

`make soak` (`python -m bench.soak --minutes 10`) starts the Procfile's web, worker and push lines
against the local Postgres (a database of its own, dropped afterwards) and a Redis database of its
own (`--redis-url`, db 3 by default; emptied first), then:

- senders POST messages at a steady total rate (`--rate`, 100/s) over several conversations, each
  with a client_id, retrying a 503 with the same one (`tests/e2e/chatload.py`);
- every receiver holds a WebSocket and resumes with its last event_id if it is ever closed;
- the resident memory (RSS) of every process is sampled every `--sample-seconds` (10 s).

At the end it waits for the queue to drain and checks that every accepted message was stored
exactly once, in acceptance order, and delivered to every receiver; then prints one table of RSS
per process (at start, max, at end, and the growth in MB/hour fitted over all samples and over
the second half alone, past the warm-up) and one of messages. Exits 1 on any loss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
import redis

from chat.jobqueue.deadletters import HASH as DEAD_LETTERS
from tests.support.chatload import Listener, Sender, conversation, reconcile, register, stored_count, until
from tests.support.settings import migrated_database
from tests.support.stack import Process, Stack, stack_env

MB = 1024 * 1024


@dataclass
class Memory:
    """RSS samples of one process (its children included, should it ever fork)."""

    name: str
    process: Process
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)

    def sample(self, elapsed: float) -> float:
        proc = psutil.Process(self.process.popen.pid)
        rss = proc.memory_info().rss
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += child.memory_info().rss
        self.samples.append((elapsed, rss / MB))
        return rss / MB

    def slope(self, half: bool = False) -> float:
        """Least-squares growth in MB/hour, over every sample or the second half of them."""
        points = self.samples[len(self.samples) // 2 :] if half else self.samples
        if len(points) < 2:
            return 0.0
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_m = sum(m for _, m in points) / n
        spread = sum((t - mean_t) ** 2 for t, _ in points)
        if spread == 0:
            return 0.0
        per_second = sum((t - mean_t) * (m - mean_m) for t, m in points) / spread
        return per_second * 3600


async def run(stack: Stack, args: argparse.Namespace, dsn: str) -> int:
    web = next(p for p in stack.processes if p.name == "web")
    push = next(p for p in stack.processes if p.name == "push")
    names: Counter[str] = Counter()
    memory = []
    for process in stack.processes:
        names[process.name] += 1
        label = process.name if names[process.name] == 1 else f"{process.name}-{names[process.name]}"
        memory.append(Memory(label, process))

    connector = aiohttp.TCPConnector(limit=args.conversations * 2 + 10)
    async with aiohttp.ClientSession(base_url=web.url, connector=connector) as http:
        members: dict[str, list[str]] = {}
        senders: list[Sender] = []
        listeners: list[Listener] = []
        for i in range(args.conversations):
            sender = await register(http, "s")
            receivers = [await register(http, "r") for _ in range(args.receivers)]
            title = f"soak {i}" if args.receivers > 1 else None
            cid = await conversation(http, sender, receivers, title=title)
            members[cid] = [r["id"] for r in receivers]
            senders.append(Sender(http, sender, cid, f"c{i}", rate=args.rate / args.conversations))
            listeners += [Listener(r, [push.ws_url], name=f"c{i}r{j}") for j, r in enumerate(receivers)]

        tasks = [asyncio.create_task(x.run()) for x in listeners]
        await until(lambda: all(x.live for x in listeners), "every receiver's socket", 30)
        stop = asyncio.Event()
        tasks += [asyncio.create_task(s.run(stop)) for s in senders]
        started = time.monotonic()
        duration = args.minutes * 60

        def accepted_ids() -> list[str]:
            return [a.message_id for s in senders for a in s.accepted]

        print(f"soak: {args.rate:g} msg/s over {args.conversations} conversations for {args.minutes:g} min")
        while True:
            elapsed = time.monotonic() - started
            rss = {m.name: m.sample(elapsed) for m in memory}
            delivered = sum(len(x.messages) for x in listeners)
            print(
                f"  {elapsed:6.0f} s  accepted {len(accepted_ids()):7d}  frames {delivered:8d}  "
                + "  ".join(f"{name} {mb:6.1f} MB" for name, mb in rss.items()),
                flush=True,
            )
            if elapsed >= duration:
                break
            await asyncio.sleep(min(args.sample_seconds, max(0.0, duration - elapsed)))
        stop.set()
        await asyncio.gather(*tasks[len(listeners) :])
        send_seconds = time.monotonic() - started
        ids = accepted_ids()

        async def all_stored() -> bool:
            return await stored_count(dsn, ids) == len(ids)

        def undelivered() -> set[str]:
            """Accepted messages that some receiver of their conversation has not had."""
            missing: set[str] = set()
            for s in senders:
                sent = {a.message_id for a in s.accepted}
                for x in listeners:
                    if x.user["id"] in members[s.conversation_id]:
                        missing |= sent - x.messages.keys()
            return missing

        problems = []
        try:
            await until(all_stored, "every accepted message stored", 120, every=0.5)
        except AssertionError as exc:
            problems.append(str(exc))
        try:
            await until(lambda: not undelivered(), "every delivery", 120, every=0.5)
        except AssertionError as exc:
            problems.append(str(exc))
        for task in tasks[: len(listeners)]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        rec = await reconcile(dsn, {s.conversation_id: s.accepted for s in senders})

    client = redis.Redis.from_url(args.redis_url)
    try:
        dead = int(client.hlen(DEAD_LETTERS))  # type: ignore[arg-type]  # the sync client answers an int
    finally:
        client.close()

    statuses = sum((s.statuses for s in senders), Counter())
    missing = undelivered()
    lost = len(set(rec.lost) | missing)
    problems += rec.problems
    if dead:
        problems.append(f"{dead} dead letters")
    if set(statuses) != {"202"}:
        problems.append(f"answers other than 202: {dict(statuses)}")
    backwards = sum(len(x.backwards) for x in listeners)
    if backwards:
        problems.append(f"{backwards} events arrived out of order")

    print(
        f"\nsoak: {args.minutes:g} min at {args.rate:g} msg/s ({len(ids) / send_seconds:.1f} accepted/s), "
        f"{args.conversations} conversations x {args.receivers} receivers, {args.workers} worker(s), "
        f"RSS sampled every {args.sample_seconds:g} s ({len(memory[0].samples)} samples)"
    )
    print("| process | pid | RSS start MB | RSS max MB | RSS end MB | slope MB/h | slope MB/h (2nd half) |")
    print("|---|---|---|---|---|---|---|")
    for m in memory:
        values = [mb for _, mb in m.samples]
        print(
            f"| {m.name} | {m.process.popen.pid} | {values[0]:.1f} | {max(values):.1f} | {values[-1]:.1f} "
            f"| {m.slope():+.1f} | {m.slope(half=True):+.1f} |"
        )
    delivered = len(ids) - len(missing)
    print("\n| messages | count |\n|---|---|")
    rows = {
        "accepted (202)": rec.accepted,
        "stored": rec.stored,
        "delivered to every receiver": delivered,
        "lost (not stored, or not delivered)": lost,
        "duplicated": rec.duplicated,
        "stored but never accepted": len(rec.extra),
        "repeated frames (at least once)": sum(x.repeats for x in listeners),
        "socket reconnects": sum(max(0, x.connections - 1) for x in listeners),
        "dead letters": dead,
    }
    for key, value in rows.items():
        print(f"| {key} | {value:,} |")
    print(f"| answers | {dict(sorted(statuses.items()))} |")
    if problems:
        print("\nFAILED: " + "; ".join(problems))
        return 1
    print("\nno loss")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=100, help="messages/s, over every conversation")
    parser.add_argument("--conversations", type=int, default=10, help="conversations, one sender each")
    parser.add_argument("--receivers", type=int, default=2, help="receivers per conversation, on WebSockets")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--sample-seconds", type=float, default=10, help="how often RSS is sampled")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/3"),
        help="a Redis database of the soak's own: it is emptied first",
    )
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    client.close()
    logs = Path(tempfile.mkdtemp(prefix="soak-"))
    with migrated_database() as url:
        env = {
            **stack_env(url),
            "REDIS_URL": args.redis_url,
            # Tokens must outlive the run, or sends turn 401 and sockets 4401 halfway through.
            "ACCESS_TOKEN_EXPIRE_MINUTES": str(int(args.minutes) + 30),
        }
        stack = Stack(env, logs)
        try:
            stack.start("web")
            for _ in range(args.workers):
                stack.start("worker")
            stack.start("push")
            code = asyncio.run(run(stack, args, url.replace("postgresql+asyncpg://", "postgresql://")))
        finally:
            stack.stop_all()
    print(f"process logs: {logs}")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
