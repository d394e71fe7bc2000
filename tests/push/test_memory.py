"""What a push process holds a socket with, pinned: most of its memory at 10,000 sockets is per
socket (docs/benchmarks.md, "Push memory"), and each cut there relies on something a library
upgrade or a new attribute could quietly undo.

- A live socket's uvicorn protocol has no instance dict (every attribute in a slot), no longer
  holds the handshake's request, response or the scope's copy of the headers, and receives into
  an `Inbox` and waits on a `Flag` (no deques allocated up front).
- An idle `Session` has no instance dict, no deque of pending frames, no sender task and no timer
  of its own: its token's expiry is one entry of the process's `Expiries`.
- The push process does not import what it never uses: httpx (and rich and pygments with it),
  argon2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from chat.identity.security import Tokens
from chat.settings import Settings
from push import frames
from push.server import Flag, Inbox, PushProtocol, PushServer, build_server
from push.session import Expiries
from tests.support.stack import ROOT
from tests.support.tokens import new_user

SOCKETS = 3


@asynccontextmanager
async def push_server(settings: Settings) -> AsyncIterator[tuple[PushServer, str]]:
    """The push process's own server (`build_server`), in process on a port the OS gives."""
    server, sock = build_server(settings, "127.0.0.1", 0)
    assert isinstance(server, PushServer)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield server, f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    finally:
        server.handle_exit(signal.SIGTERM, None)
        server._captured_signals.clear()  # nothing to re-raise once serve() returns
        await asyncio.wait_for(task, 15)
        sock.close()


async def ready(url: str) -> ClientConnection:
    ws = await connect(url, compression=None)
    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "ready", frame
    return ws


async def test_a_live_socket_holds_no_handshake_and_no_instance_dict(settings: Settings) -> None:
    token = Tokens(settings).issue_access(await new_user(settings.database_url))
    async with push_server(settings) as (server, url):
        clients = [await ready(f"{url}?token={token}") for _ in range(SOCKETS)]
        try:
            protocols = [p for p in server.server_state.connections if isinstance(p, PushProtocol)]
            assert len(protocols) == SOCKETS
            for protocol in protocols:
                # An attribute uvicorn adds in a later version lands here: name it in __slots__.
                assert vars(protocol) == {}
                assert not hasattr(protocol, "request")
                assert not hasattr(protocol, "response")
                assert protocol.scope["headers"] == []
                assert isinstance(protocol.queue, Inbox)
                assert isinstance(protocol.writable, Flag)
                assert protocol.writable.is_set()

            sessions = list(server._connections._open)
            assert len(sessions) == SOCKETS
            for session in sessions:
                assert not hasattr(session, "__dict__")
                assert session._pending is None and session._sender is None
            # One timer for the process's token expiries, not one a socket.
            assert len(server._connections._expiries._seconds) == 1

            # Still a working socket: a ping is answered, and the session is idle again after.
            await clients[0].send('{"type":"ping"}')
            assert orjson.loads(await asyncio.wait_for(clients[0].recv(), 5)) == {"type": "pong"}
        finally:
            for client in clients:
                await client.close()


async def test_the_inbox_hands_items_out_in_order_and_a_cancelled_getter_passes_its_turn() -> None:
    inbox: Inbox[str] = Inbox()
    assert inbox.empty()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("a")
    first.cancel()  # woken, then cancelled before it ran: "a" must go to the next getter
    assert await second == "a"
    assert first.cancelled()
    inbox.put_nowait("b")
    inbox.put_nowait("c")
    assert inbox.qsize() == 2
    assert [await inbox.get(), inbox.get_nowait()] == ["b", "c"]
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()
    assert inbox._getters is None  # nothing held once nobody waits


async def test_the_flag_blocks_waiters_until_set() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    flag.set()
    assert await asyncio.wait_for(waiter, 1) is True
    flag.clear()
    assert not flag.is_set()
    flag.set()
    assert await flag.wait() is True
    assert flag._waiters is None


@dataclass(eq=False)
class Expiring:
    """What Expiries needs of a session: its token's expiry, and a way to close it."""

    expires_at: datetime
    closed: list[frames.Close] = field(default_factory=list)

    def close_with(self, close: frames.Close) -> None:
        self.closed.append(close)


async def test_expiries_close_each_session_once_its_token_expired_and_not_one_that_left() -> None:
    now = datetime.fromtimestamp(int(time.time()), UTC)
    soon, left = Expiring(now + timedelta(seconds=1)), Expiring(now + timedelta(seconds=1))
    later = Expiring(now + timedelta(minutes=5))
    expiries = Expiries()
    for session in (soon, left, later):
        expiries.add(session)  # type: ignore[arg-type]
    expiries.discard(left)  # type: ignore[arg-type]
    async with asyncio.timeout(3):
        while not soon.closed:
            await asyncio.sleep(0.05)
    assert time.time() >= (now + timedelta(seconds=1)).timestamp()  # not before its token expired
    assert soon.closed == [frames.TOKEN_INVALID]
    assert left.closed == [] and later.closed == []
    assert expiries._seconds == [int(later.expires_at.timestamp())]  # armed for the next one


def test_the_push_process_does_not_import_httpx_or_argon2() -> None:
    # A fresh interpreter: the test process itself imports httpx for its own clients.
    env: dict[str, Any] = {
        **os.environ,
        "ENVIRONMENT": "test",
        "SECRET_KEY": "memory-test-" + "x" * 32,
        "DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    script = (
        "import sys\n"
        "import push.__main__\n"
        "from push.server import build_server\n"
        "from chat.settings import Settings\n"
        "server, sock = build_server(Settings(), '127.0.0.1', 0)\n"
        "sock.close()\n"
        "print(sorted(m for m in ('argon2', 'httpx', 'rich', 'pygments') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
