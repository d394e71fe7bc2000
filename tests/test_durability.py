"""What a 202 promises: the start-up verdict on the queue Redis's persistence, and
ACCEPT_DURABILITY=replica answering 202 only once a replica has the write (503 without one)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from falcon.testing import ASGIConductor

from api.app import build_deps, create_app
from chat.infra import durability
from chat.infra.durability import Persistence
from chat.infra.redisclient import create_redis
from chat.settings import Settings
from tests.support import ApiClient, assert_problem
from tests.support.settings import make_settings


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(workdir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    process = subprocess.Popen([*args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.exceptions.RedisError):
                if client.ping():
                    return process
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"redis-server on {port} did not start")


def test_the_verdict_names_what_a_crash_could_lose() -> None:
    plain = make_settings()
    replica = make_settings(accept_durability="replica")
    assert durability.judge(plain, [Persistence(aof=True, fsync="always", replicas=0)]) == []
    [no_aof] = durability.judge(plain, [Persistence(aof=False, fsync="everysec", replicas=1)])
    assert "appendonly no" in no_aof and "docs/operations.md" in no_aof
    [everysec] = durability.judge(plain, [Persistence(aof=True, fsync="everysec", replicas=0)])
    assert "1 s" in everysec
    [fsync_no] = durability.judge(plain, [Persistence(aof=True, fsync="no", replicas=0)])
    assert "appendfsync no" in fsync_no
    # With a replica confirming every send, how the primary persists does not matter...
    assert durability.judge(replica, [Persistence(aof=False, fsync=None, replicas=1)]) == []
    # ...but without one every send would be refused.
    [alone] = durability.judge(replica, [Persistence(aof=True, fsync="always", replicas=0)])
    assert "no connected replica" in alone


async def test_a_process_says_at_start_that_the_runs_redis_keeps_nothing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The test run's own redis-server runs with appendonly no, as the machine's does.
    client = create_redis(settings)
    try:
        caplog.set_level(logging.WARNING)
        await durability.report(client, settings, logging.getLogger("test"))
    finally:
        await client.aclose(close_connection_pool=True)
    assert "appendonly no" in caplog.text


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    primary_port, replica_port = _port(), _port()
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    primary = _start(tmp_path / "p", primary_port, "--appendonly", "no", "--repl-diskless-sync-delay", "0")
    replica = _start(tmp_path / "r", replica_port, "--replicaof", "127.0.0.1", str(primary_port))
    client = redis.Redis(port=primary_port)
    try:
        deadline = time.monotonic() + 10
        # Connected is not enough: WAIT counts only a replica that streams (past its first sync).
        while "online" not in str(client.info("replication").get("slave0", "")):  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the replica never came online"
            time.sleep(0.05)
        yield primary_port, replica
    finally:
        client.close()
        for process in (replica, primary):
            if process.poll() is None:
                process.terminate()
                process.wait(10)


@pytest.fixture
async def replica_api(
    settings: Settings, primary_and_replica: tuple[int, subprocess.Popen[bytes]]
) -> AsyncIterator[ApiClient]:
    port, _ = primary_and_replica
    ours = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{port}/0",
            "accept_durability": "replica",
            "accept_replica_timeout_ms": 2000,  # a loaded CI box: the replica may take a while
        }
    )
    async with ASGIConductor(create_app(ours, build_deps(ours))) as conductor:
        yield ApiClient(conductor)


async def test_with_replica_durability_a_send_is_202_once_the_replica_has_it_and_503_without_one(
    replica_api: ApiClient, primary_and_replica: tuple[int, subprocess.Popen[bytes]]
) -> None:
    api = replica_api
    port, replica = primary_and_replica
    alice, _, cid = await api.pair()
    sent = await api.post(
        f"/conversations/{cid}/messages", alice, json={"body": "kept twice", "client_id": "a"}
    )
    assert sent.status_code == 202, sent.text
    # The replica has it: the job is on the replica's copy of the queue.
    replica_port = int(str(list(replica.args)[2]))  # type: ignore[arg-type]
    mirror = redis.Redis(port=replica_port)
    try:
        assert mirror.zcard("arq:queue") == 1
    finally:
        mirror.close()

    os.kill(replica.pid, signal.SIGKILL)
    replica.wait(10)
    refused = await api.post(
        f"/conversations/{cid}/messages", alice, json={"body": "unconfirmed", "client_id": "b"}
    )
    assert_problem(refused, 503)
    assert refused.headers.get("retry-after")
    # A retry with the same client_id is that message again, not a second one.
    again = await api.post(
        f"/conversations/{cid}/messages", alice, json={"body": "unconfirmed", "client_id": "b"}
    )
    assert_problem(again, 503)
    primary = redis.Redis(port=port)
    try:
        assert primary.zcard("arq:queue") == 2
    finally:
        primary.close()
