"""What a deployment leans on: the ports processes announce and share, the image's commands and checks."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis.asyncio

from chat.jobqueue import heartbeats
from tests.support import services
from tests.support.compose import compose
from tests.support.stack import E2E_REDIS_URL, ROOT, Process, Stack, free_ports_at, stack_env


def announced(process: Process, pattern: str, timeout: float = 20) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, process.output())
        if found:
            return found
        assert process.popen.poll() is None, f"{process.name} exited:\n{process.output()}"
        time.sleep(0.1)
    raise AssertionError(f"{process.name} never logged {pattern!r}:\n{process.output()}")


async def live_pids() -> set[int]:
    client = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
    try:
        return {w["pid"] for w in await heartbeats.live(client)}
    finally:
        await client.aclose()


def test_workers_on_one_host_share_a_metrics_port_setting(stack: Stack) -> None:
    first = free_ports_at(range(3))
    # Someone else holds the first port; the two workers take the next two, one each.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("0.0.0.0", first))
        squatter.listen()
        workers = [
            stack.start("worker", wait=False, WORKER_METRICS_PORT=str(first), LOG_LEVEL="INFO")
            for _ in range(2)
        ]
        ports = {int(announced(w, r"worker metrics on http://0\.0\.0\.0:(\d+)/metrics")[1]) for w in workers}
        assert ports == {first + 1, first + 2}
        for port in ports:
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert scraped.status_code == 200 and "arq_jobs_total" in scraped.text
        deadline = time.monotonic() + 10
        while asyncio.run(live_pids()) != {w.popen.pid for w in workers}:
            assert time.monotonic() < deadline, [w.output() for w in workers]
            time.sleep(0.2)
        assert all(w.popen.poll() is None for w in workers)
    for worker in workers:
        assert worker.stop() == 0, worker.output()


def test_push_says_where_clients_connect(stack: Stack) -> None:
    push = stack.start("push", LOG_LEVEL="INFO")
    url = announced(push, r"push serving (ws://\S+/ws)")[1]
    assert url == f"ws://0.0.0.0:{push.port}/ws"
    push.stop()


def health_check(service: str, port: int) -> subprocess.CompletedProcess[bytes]:
    """The compose file's health check of a service, run as Docker would in its container."""
    kind, *command = compose()["services"][service]["healthcheck"]["test"]
    assert kind == "CMD"
    env = {**os.environ, "PORT": str(port), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(command, env=env, capture_output=True, timeout=30)


def test_the_image_commands_serve_and_pass_their_health_checks(stack: Stack) -> None:
    name = services.create_database()
    through = Stack(stack_env(services.database_url(name)), stack.logs)
    # The compose file's commands: each Procfile line through bin/procfile-run.
    through.lines = {kind: f"bin/procfile-run {kind}" for kind in through.lines}
    try:
        released = through.run("release")
        assert released.returncode == 0, released.stderr.decode()
        for kind in ("web", "push"):
            process = through.start(kind)
            assert health_check(kind, process.port).returncode == 0
            process.stop()
            assert health_check(kind, process.port).returncode != 0
        unknown = subprocess.run([str(ROOT / "bin/procfile-run"), "nope"], capture_output=True, text=True)
        assert unknown.returncode == 64 and "no line named 'nope'" in unknown.stderr
    finally:
        through.stop_all()
        services.drop_database(name)
