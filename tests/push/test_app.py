"""The push app end to end in process: what a client sees when Redis is down, hangs, or says no."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from falcon import WebSocketDisconnected
from falcon.testing import ASGIConductor

from chat.identity.security import Tokens
from chat.settings import Settings
from push import frames, session
from push.app import create_app
from tests.support.protocol import check_frame
from tests.support.settings import make_settings
from tests.support.tokens import new_user

# Falcon forwards a close reason only to servers of ASGI spec 2.3 or later; uvicorn speaks 2.4.
SPEC = "2.4"
RETRY_HINT = re.compile(r"too many sockets; retry after [1-9]\d* s")


def ws_query(settings: Settings, user: uuid.UUID) -> str:
    return f"token={Tokens(settings).issue_access(user)}"


async def refused(conductor: ASGIConductor, query: str) -> tuple[int | None, str | None]:
    """Open a socket the server is expected to accept and then close; its close code and reason."""
    async with asyncio.timeout(3), conductor.simulate_ws("/ws", query_string=query, spec_version=SPEC) as ws:
        with contextlib.suppress(WebSocketDisconnected):  # it may close before we look
            await ws.wait_ready()
            while True:
                await ws.receive_text()
        assert ws.closed
        return ws.close_code, ws.close_reason


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused at once, like a stopped Redis."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def silent_redis() -> AsyncIterator[int]:
    """A 'Redis' that accepts connections and never answers: a hung server or a black-holed route."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def test_redis_down_at_the_handshake_closes_1011_with_a_reason(postgres_db: str) -> None:
    with closed_port() as port:
        settings = make_settings(database_url=postgres_db, redis_url=f"redis://127.0.0.1:{port}/0")
        async with ASGIConductor(create_app(settings)) as conductor:
            code, reason = await refused(conductor, ws_query(settings, await new_user(postgres_db)))
    # Not 1000 (a server error is not a normal closure) and not a bare 1011: the reason says what to do.
    assert (code, reason) == (1011, "server error; reconnect with back-off")


async def test_a_hung_redis_does_not_leave_the_handshake_hanging(
    monkeypatch: pytest.MonkeyPatch, postgres_db: str
) -> None:
    monkeypatch.setattr(session, "REDIS_TIMEOUT", 0.3)
    user = await new_user(postgres_db)
    async with silent_redis() as port:
        settings = make_settings(database_url=postgres_db, redis_url=f"redis://127.0.0.1:{port}/0")
        async with ASGIConductor(create_app(settings)) as conductor:
            started = asyncio.get_running_loop().time()
            code, reason = await refused(conductor, ws_query(settings, user))
            elapsed = asyncio.get_running_loop().time() - started
    assert (code, reason) == (1011, frames.SERVER_ERROR.reason)
    assert elapsed < 2


async def ready(ws: Any) -> dict[str, Any]:
    frame = check_frame(orjson.loads(await asyncio.wait_for(ws.receive_text(), 3)))
    assert frame["type"] == "ready", frame
    return frame


async def test_sockets_per_user_are_capped_across_push_processes(postgres_db: str) -> None:
    # Two push apps on one Redis, as two push processes would be.
    settings = make_settings(
        database_url=postgres_db, redis_url=f"memory://{uuid.uuid4().hex}", rate_limit_sockets_per_user=2
    )
    user, other = await new_user(postgres_db), await new_user(postgres_db)
    query = ws_query(settings, user)
    async with ASGIConductor(create_app(settings)) as a, ASGIConductor(create_app(settings)) as b:
        async with (
            a.simulate_ws("/ws", query_string=query, spec_version=SPEC) as first,
            b.simulate_ws("/ws", query_string=query, spec_version=SPEC) as second,
        ):
            await ready(first)
            await ready(second)
            code, reason = await refused(a, query)
            assert code == 4429 and reason is not None and RETRY_HINT.fullmatch(reason), reason
            code, reason = await refused(b, query)
            assert code == 4429
            # The cap is per user: someone else connects as usual.
            async with b.simulate_ws("/ws", query_string=ws_query(settings, other), spec_version=SPEC) as ws:
                await ready(ws)
        # Both closed: their slots are free again at once, not after the presence TTL.
        async with a.simulate_ws("/ws", query_string=query, spec_version=SPEC) as again:
            await ready(again)


async def test_sockets_cap_off_admits_any_number(postgres_db: str) -> None:
    settings = make_settings(
        database_url=postgres_db, redis_url=f"memory://{uuid.uuid4().hex}", rate_limit_sockets_per_user="off"
    )
    assert settings.rate_limit_sockets_per_user is None
    query = ws_query(settings, await new_user(postgres_db))
    async with ASGIConductor(create_app(settings)) as conductor, contextlib.AsyncExitStack() as stack:
        for _ in range(25):
            ws = await stack.enter_async_context(
                conductor.simulate_ws("/ws", query_string=query, spec_version=SPEC)
            )
            await ready(ws)
