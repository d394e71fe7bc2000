"""chat.infra.serving.Config, which the api, push and dev-mode servers all run: the peer address the app
sees is the socket's, whatever proxy headers say (TRUSTED_PROXIES is the project's one rule)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import orjson
import pytest

from chat.infra import serving


async def echo_client(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = orjson.dumps({"client": scope["client"], "scheme": scope["scheme"]})
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


async def test_the_app_sees_the_peer_not_a_forwarded_header(monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn's own switch for trusting every proxy: it must not matter either.
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = serving.QuietServer(
        serving.Config(echo_client, header_timeout=5, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            seen = await http.get(
                "/",
                headers={
                    "X-Forwarded-For": "203.0.113.9",
                    "X-Forwarded-Proto": "https",
                    "Forwarded": "for=1.2.3.4",
                },
            )
        assert seen.json()["client"][0] == "127.0.0.1"
        assert seen.json()["scheme"] == "http"
        assert "server" not in seen.headers
    finally:
        server.should_exit = True
        await task
        sock.close()


def test_uvicorn_logs_only_what_went_wrong() -> None:
    """Its "Uvicorn running on http://0.0.0.0:…" names the bind address, not where clients
    connect; each process logs that line itself (README, Quick start)."""
    import logging

    config = serving.Config(lambda *a: None, header_timeout=5)
    config.configure_logging()
    assert logging.getLogger("uvicorn.error").getEffectiveLevel() == logging.WARNING
