"""The uvicorn seam: what `chat/infra/serving.py` and `push/server.py` rely on uvicorn to do, pinned by
behaviour. pyproject.toml holds uvicorn below its next minor version; to upgrade, raise the pin,
run these, and change the subclasses (not their callers) until they pass.

Each test runs a real uvicorn server in process on a port the OS gives, and fails if uvicorn
stops calling an overridden method at the point the subclass assumes.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat.infra import serving
from push.server import PushProtocol, PushServer, listen
from push.session import SEND_NOW_EXTENSION, Connections

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def http_ok(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def config(app: Any, **options: Any) -> serving.Config:
    return serving.Config(app, header_timeout=5, lifespan="off", log_level="warning", **options)


@asynccontextmanager
async def serving_on(server: uvicorn.Server) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """The server's own serve() on a socket of ours, as the processes run it; its base URL."""
    sock = listen("127.0.0.1", 0, 65536)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{sock.getsockname()[1]}", task
    finally:
        server.should_exit = True
        if isinstance(server, serving.QuietServer):
            server.handle_exit(signal.SIGTERM, None)
            server._captured_signals.clear()  # nothing to re-raise after serve()
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_every_counter_of_the_quiet_loop_refreshes_the_date_header_and_sees_an_exit() -> None:
    # QuietServer.main_loop ticks once a second with counters 0, 10, 20...: uvicorn's on_tick must
    # refresh the Date header on each of them (it does on multiples of ten) and say when to stop.
    server = serving.QuietServer(config(http_ok))
    server.config.load()
    for counter in (0, serving._COUNTER_STEP, 86 * serving._COUNTER_STEP):
        server.server_state.default_headers = []
        assert await server.on_tick(counter) is False
        assert [name for name, _ in server.server_state.default_headers] == [b"date"]
    server.should_exit = True
    assert await server.on_tick(serving._COUNTER_STEP) is True


class Recorded(Connections):
    """The push server's sessions, recording that its shutdown reached them."""

    def __init__(self) -> None:
        super().__init__()
        self.restarts: list[float] = []

    async def restart_all(self, grace: float) -> None:
        self.restarts.append(grace)
        await super().restart_all(grace)


async def test_a_signal_reaches_handle_exit_and_wakes_the_quiet_loop_then_shutdown_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An hour between ticks: only handle_exit setting the loop's event can end main_loop in time.
    monkeypatch.setattr(serving, "TICK_SECONDS", 3600.0)
    connections = Recorded()
    server = PushServer(config(http_ok), connections)
    # uvicorn re-raises a captured signal once serve() returns: to a handler that ignores it here.
    ignored: list[int] = []

    def ignore(sig: int, frame: FrameType | None) -> None:
        ignored.append(sig)

    previous = signal.signal(signal.SIGTERM, ignore)
    try:
        sock = listen("127.0.0.1", 0, 65536)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            # serve() ran startup, then the QuietServer's main_loop (its event exists).
            while not (server.started and server._exit is not None):
                await asyncio.sleep(0.01)
        signal.raise_signal(signal.SIGTERM)  # uvicorn's handler: server.handle_exit
        await asyncio.wait_for(task, 10)
        sock.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert server.should_exit
    assert connections.restarts == [2.0]  # PushServer.shutdown ran after the loop ended
    assert ignored == [signal.SIGTERM]


async def test_the_header_hooks_fire_in_order_and_before_the_app_is_called() -> None:
    seen: list[str] = []

    class Recording(serving.HeaderDeadlineProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            seen.append("connection_made")
            super().connection_made(transport)
            assert self._head_deadline is not None  # armed: self.config and self.loop are there

        def on_message_begin(self) -> None:
            seen.append("message_begin")
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            seen.append("headers_complete")
            super().on_headers_complete()
            assert self.cycle is not None and not self.cycle.response_complete

        def connection_lost(self, exc: Exception | None) -> None:
            seen.append("connection_lost")
            assert self.cycle is not None and self.cycle.response_complete
            super().connection_lost(exc)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append("app")
        await http_ok(scope, receive, send)

    settings = config(app)
    settings.http = Recording
    server = serving.QuietServer(settings)
    async with serving_on(server) as (address, _):
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://{address}/", headers={"Connection": "close"})
        assert answer.status_code == 200 and "server" not in answer.headers
        async with asyncio.timeout(10):
            while "connection_lost" not in seen:
                await asyncio.sleep(0.01)
    assert seen == ["connection_made", "message_begin", "headers_complete", "app", "connection_lost"]


async def test_the_push_protocol_hooks_see_the_handshake_and_every_text_message() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        # handle_connect put the send-now hook in the scope before the app was called.
        send_now = scope["extensions"][SEND_NOW_EXTENSION]["send"]
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            assert send_now("echo " + message["text"])

    server = serving.QuietServer(config(app, ws=PushProtocol, ws_per_message_deflate=False))
    async with serving_on(server) as (address, _):
        async with connect(f"ws://{address}/", compression=None) as ws:
            await ws.send("é")
            assert await asyncio.wait_for(ws.recv(), 10) == "echo é"
            # A text frame that is not UTF-8 reaches send_receive_event_to_app, which fails it.
            await ws.send("\xff".encode("latin-1"), text=True)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1007, "invalid UTF-8")
