"""The push handshake from a test's side: the first frame a socket gets or the code it closes with,
and a port nothing listens on (a dependency that is away)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
from falcon import WebSocketDisconnected
from falcon.testing import ASGIConductor

SPEC = "2.4"  # Falcon forwards a close reason only to servers of ASGI spec 2.3 or later


async def first_frame_or_close(push: ASGIConductor, token: str) -> tuple[dict[str, Any] | None, int | None]:
    """The first frame the socket gets, or the code it was closed with first."""
    try:
        async with (
            asyncio.timeout(10),
            push.simulate_ws("/ws", query_string=f"token={token}", spec_version=SPEC) as ws,
        ):
            frame: dict[str, Any] = orjson.loads(await ws.receive_text())
            return frame, None
    except WebSocketDisconnected as closed:
        return None, closed.code


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
