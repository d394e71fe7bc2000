"""A Redis that comes back from an older snapshot must not hand out seqs already used.

With `appendonly no`, a Redis killed under load restarts from its last RDB snapshot: every
conversation's `seq` counter goes back to what it was then, while Postgres already holds the
messages sent since. The first new connection to the restarted Redis notices its new run id and
bumps the restart epoch (`chat.infra.restarts`); the send script then refuses to trust a counter
checked before the bump, and the api raises it to what Postgres holds first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from falcon.testing import ASGIConductor
from sqlalchemy import select

from api.app import build_deps, create_app
from chat.models import Message
from chat.settings import Settings
from tests.support import ApiClient
from tests.support.messages import send
from workers.main import create_worker


class SnapshotRedis:
    """A redis-server of the test's own that persists only by explicit SAVE, like a Redis with
    `appendonly no` between its periodic snapshots."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        args += ["--appendonly", "no", "--save", ""]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.exceptions.RedisError):
                    if client.ping():
                        return
                time.sleep(0.05)
            raise RuntimeError("redis-server did not start")
        finally:
            client.close()

    def snapshot(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.save()
        finally:
            client.close()
        shutil.copy(self.workdir / "dump.rdb", self.workdir / "old.rdb")

    def crash_and_restore(self) -> None:
        """SIGKILL (nothing is written on the way down), then start from the snapshot taken earlier."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait(10)
        shutil.copy(self.workdir / "old.rdb", self.workdir / "dump.rdb")
        self.start()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@pytest.fixture
def snapshot_redis(tmp_path: Path) -> Iterator[SnapshotRedis]:
    server = SnapshotRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def stack(
    settings: Settings, snapshot_redis: SnapshotRedis
) -> AsyncIterator[tuple[ApiClient, Settings]]:
    ours = settings.model_copy(update={"redis_url": snapshot_redis.url})
    deps = build_deps(ours)
    async with ASGIConductor(create_app(ours, deps)) as conductor:
        yield ApiClient(conductor), ours


async def _drain(settings: Settings) -> None:
    worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01)
    try:
        await worker.main()
    finally:
        await worker.close()


async def _stored_seqs(settings: Settings, cid: str) -> dict[int, str]:
    from chat.infra.db import create_engine, create_sessionmaker

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(Message.seq, Message.body).where(Message.conversation_id == cid)
            )
            return {seq: body or "" for seq, body in rows}
    finally:
        await engine.dispose()


async def test_a_redis_back_from_an_old_snapshot_reuses_no_seq(
    stack: tuple[ApiClient, Settings], snapshot_redis: SnapshotRedis
) -> None:
    api, settings = stack
    alice, _, cid = await api.pair()
    before = [await send(api, alice, cid, f"before {i}") for i in range(3)]
    await _drain(settings)
    snapshot_redis.snapshot()  # the counter stands at 3 in the snapshot
    after = [await send(api, alice, cid, f"after {i}") for i in range(4)]
    await _drain(settings)
    assert [m["seq"] for m in before + after] == list(range(1, 8))

    await asyncio.to_thread(snapshot_redis.crash_and_restore)

    again = [await send(api, alice, cid, f"again {i}") for i in range(3)]
    assert [m["seq"] for m in again] == [8, 9, 10]
    await _drain(settings)
    stored = await _stored_seqs(settings, cid)
    # Every message stored under the seq its sender was answered, none under another's.
    answered = {m["seq"]: body for m, body in zip(before + after + again, _bodies(), strict=True)}
    assert stored == answered


def _bodies() -> list[str]:
    return (
        [f"before {i}" for i in range(3)]
        + [f"after {i}" for i in range(4)]
        + [f"again {i}" for i in range(3)]
    )
