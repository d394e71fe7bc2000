"""`python -m bench.durability`: what ACCEPT_DURABILITY=replica costs a send.

A Redis primary with one replica of its own (ports from the OS, nothing kept on disk), the Procfile's
web, worker and push on it, and the throughput and open-loop scenarios of `make bench`, first with
ACCEPT_DURABILITY=none, then with replica, on the same pair: the difference is the WAIT for the
replica's acknowledgement on every send.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

from bench import scenarios
from bench.clients import Client
from bench.meter import Meter
from bench.scenarios import Bench, Figures
from bench.suite import plain, raise_file_limit
from tests.support.settings import migrated_database
from tests.support.stack import Stack, stack_env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis(workdir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    args += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", *extra]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        for _ in range(200):
            with contextlib.suppress(redis.exceptions.RedisError):
                if client.ping():
                    return process
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis-server on {port} did not start")


def _online(port: int) -> None:
    client = redis.Redis(port=port)
    try:
        for _ in range(200):
            if "online" in str(client.info("replication").get("slave0", "")):  # type: ignore[union-attr]
                return
            time.sleep(0.05)
        raise RuntimeError("the replica never came online")
    finally:
        client.close()


async def _measure(stack: Stack, url: str, redis_url: str, seconds: float) -> dict[str, Figures]:
    processes = {p.name: p for p in stack.processes}
    meter = Meter({name: p.popen.pid for name, p in processes.items()}, urlsplit(redis_url).port or 6379)
    client = Client(processes["web"].url, processes["push"].ws_url)
    bench = Bench(client, meter, plain(url))
    try:
        pairs = await bench.pairs(50)
        await scenarios.throughput(bench, pairs, seconds=2, in_flight=16)  # warm-up, not kept
        return {
            "throughput": await scenarios.throughput(bench, pairs, seconds=seconds, in_flight=64),
            "open loop 300/s": await scenarios.open_loop(bench, pairs, 300, seconds),
        }
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    raise_file_limit()
    work = Path(tempfile.mkdtemp(prefix="bench-durability-"))
    primary_port, replica_port = _port(), _port()
    primary = _redis(work / "primary", primary_port)
    replica = _redis(work / "replica", replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    rows: dict[str, dict[str, Figures]] = {}
    try:
        _online(primary_port)
        redis_url = f"redis://127.0.0.1:{primary_port}/0"
        for mode in ("none", "replica"):
            redis.Redis(port=primary_port).flushdb()
            with migrated_database(durable=True) as url:
                env = stack_env(url) | {
                    "REDIS_URL": redis_url,
                    "RATE_LIMIT_SOCKETS_PER_USER": "off",
                    "ACCEPT_DURABILITY": mode,
                }
                stack = Stack(env, Path(tempfile.mkdtemp(prefix="bench-")))
                try:
                    for kind in ("web", "worker", "push"):
                        stack.start(kind)
                    rows[mode] = asyncio.run(_measure(stack, url, redis_url, args.seconds))
                finally:
                    stack.stop_all()
    finally:
        for process in (replica, primary):
            process.terminate()
            process.wait(10)
    names = sorted({figure for result in rows["none"].values() for figure in result})
    print(f"\nACCEPT_DURABILITY, {args.seconds:.0f} s a scenario, one replica on this machine\n")
    print("| scenario | figure | none | replica |")
    print("|---|---|---:|---:|")
    for scenario in rows["none"]:
        for figure in names:
            if figure in rows["none"][scenario] and figure in rows["replica"][scenario]:
                a, b = rows["none"][scenario][figure], rows["replica"][scenario][figure]
                if isinstance(a, int | float) and isinstance(b, int | float):
                    print(f"| {scenario} | {figure} | {a:,.1f} | {b:,.1f} |")


if __name__ == "__main__":
    main()
