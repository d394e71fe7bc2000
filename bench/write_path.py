"""Send → persist → deliver, measured on the real processes: `make bench` prints a table.

Starts the Procfile's web, worker and push lines against local Postgres and Redis (a database of
its own, dropped afterwards), connects one WebSocket per receiver, and has senders POST messages
with bounded concurrency. Latency is from just before the POST to the frame arriving at the
receiver's socket.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import redis
from websockets.asyncio.client import connect

from tests.support.settings import migrated_database
from tests.support.stack import E2E_REDIS_URL, Stack, stack_env


async def _user(http: httpx.AsyncClient) -> dict[str, Any]:
    name = f"b{uuid.uuid4().hex[:10]}"
    await http.post("/auth/register", json={"username": name, "password": "benchmark-pass"})
    login = (await http.post("/auth/login", json={"username": name, "password": "benchmark-pass"})).json()
    me = (await http.get("/users/me", headers={"Authorization": f"Bearer {login['access_token']}"})).json()
    return {
        "id": me["id"],
        "token": login["access_token"],
        "headers": {"Authorization": f"Bearer {login['access_token']}"},
    }


async def run(stack: Stack, pairs: int, messages: int, concurrency: int, rate: float = 0) -> dict[str, float]:
    web = next(p for p in stack.processes if p.name == "web")
    push = next(p for p in stack.processes if p.name == "push")
    limits = httpx.Limits(max_connections=concurrency * pairs + 10)
    async with httpx.AsyncClient(base_url=web.url + "/api/v1", timeout=30, limits=limits) as http:
        senders = [await _user(http) for _ in range(pairs)]
        receivers = [await _user(http) for _ in range(pairs)]
        convs = []
        for s, r in zip(senders, receivers, strict=True):
            conv = await http.post(
                "/conversations", json={"kind": "direct", "participant_ids": [r["id"]]}, headers=s["headers"]
            )
            convs.append(conv.json()["id"])

        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        total = pairs * messages
        all_delivered = asyncio.Event()

        async def receive(receiver: dict[str, Any]) -> None:
            async with connect(f"{push.ws_url}?token={receiver['token']}", max_size=2**20) as ws:
                ready.release()
                async for frame in ws:
                    event = orjson.loads(frame)
                    if event.get("type") != "message.created":
                        continue
                    body = event["data"]["body"]
                    latencies.append(time.perf_counter() - sent_at[body])
                    if len(latencies) == total:
                        all_delivered.set()
                        return

        ready = asyncio.Semaphore(0)
        listeners = [asyncio.create_task(receive(r)) for r in receivers]
        for _ in receivers:
            await ready.acquire()

        # aiohttp for the load itself: httpx costs several times more CPU per request, and on a
        # two-core box the client would be measured instead of the server.
        connector = aiohttp.TCPConnector(limit=concurrency * pairs)
        load = aiohttp.ClientSession(connector=connector)

        async def send(sender: dict[str, Any], cid: str) -> None:
            gate = asyncio.Semaphore(concurrency)
            url = f"{web.url}/api/v1/conversations/{cid}/messages"

            async def one(i: int) -> None:
                if rate:
                    # Paced: message i leaves at i/rate seconds, so latency is measured without a backlog.
                    await asyncio.sleep(i / rate)
                async with gate:
                    body = f"{cid}:{i}"
                    sent_at[body] = time.perf_counter()
                    async with load.post(url, json={"body": body}, headers=sender["headers"]) as result:
                        assert result.status == 202, await result.text()

            await asyncio.gather(*(one(i) for i in range(messages)))

        started = time.perf_counter()
        await asyncio.gather(*(send(s, c) for s, c in zip(senders, convs, strict=True)))
        await load.close()
        accepted_s = time.perf_counter() - started
        await asyncio.wait_for(all_delivered.wait(), timeout=120)
        delivered_s = time.perf_counter() - started
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)

    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "messages": total,
        "accepted/s": total / accepted_s,
        "delivered/s": total / delivered_s,
        "p50 ms": statistics.median(ms),
        "p95 ms": ms[int(len(ms) * 0.95) - 1],
        "p99 ms": ms[int(len(ms) * 0.99) - 1],
        "max ms": ms[-1],
    }


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=4, help="sender/receiver pairs, one conversation each")
    parser.add_argument("--messages", type=int, default=500, help="messages per sender")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per sender")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--rate", type=float, default=0, help="messages/s per sender (0: as fast as possible)"
    )
    args = parser.parse_args()

    client = redis.Redis.from_url(E2E_REDIS_URL)
    client.flushdb()
    client.close()
    with migrated_database() as url:
        stack = Stack(stack_env(url), Path(tempfile.mkdtemp(prefix="bench-")))
        try:
            stack.start("web")
            for _ in range(args.workers):
                stack.start("worker")
            stack.start("push")
            # A short warm-up so connection pools and caches are filled before measuring.
            asyncio.run(run(stack, 1, 50, 4))
            before = {p: cpu_seconds(p.popen.pid) for p in stack.processes}
            client_before = sum(os.times()[:2])
            result = asyncio.run(run(stack, args.pairs, args.messages, args.concurrency, args.rate))
            # The load generator shares the two cores; its cost is part of the picture.
            result["client cpu ms/msg"] = (sum(os.times()[:2]) - client_before) * 1000 / result["messages"]
            for process, start in before.items():
                # CPU per message shows which process type to scale (or optimise) first.
                used = cpu_seconds(process.popen.pid) - start
                result[f"{process.name} cpu ms/msg"] = used * 1000 / result["messages"]
        finally:
            stack.stop_all()

    print(
        f"\nwrite path: {args.pairs} pairs x {args.messages} messages, "
        f"{args.concurrency} in flight per sender, {args.workers} worker(s)"
    )
    print("| metric | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:,.1f} |" if isinstance(value, float) else f"| {key} | {value:,} |")


if __name__ == "__main__":
    main()
