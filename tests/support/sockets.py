"""WebSocket clients of the Procfile's push processes, for the e2e tests: open a socket, read its
frames (each checked against the protocol), and a pair of users online on two push processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.support.protocol import check_frame
from tests.support.stack import Client, Process, Stack


def procs(stack: Stack, kind: str) -> list[Process]:
    """The stack's running processes of one Procfile line."""
    return [p for p in stack.processes if p.name == kind and p.popen.poll() is None]


async def open_ws(
    push: Process, user: dict[str, Any], last_event_id: str | None = None
) -> tuple[ClientConnection, dict[str, Any]]:
    url = f"{push.ws_url}?token={user['access_token']}"
    if last_event_id:
        url += f"&last_event_id={last_event_id}"
    ws = await connect(url, compression=None)
    return ws, await next_frame(ws)


async def next_frame(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return check_frame(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def frames_until(
    ws: ClientConnection, count: int, kind: str = "message.created"
) -> list[dict[str, Any]]:
    """The next `count` frames of one type, skipping the others (presence, typing...)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await next_frame(ws)
        if frame["type"] == kind:
            got.append(frame)
    return got


async def direct(client: Client, a: dict[str, Any], b: dict[str, Any]) -> str:
    result = await client.http.post(
        "/conversations", json={"kind": "direct", "participant_ids": [b["id"]]}, headers=a["headers"]
    )
    assert result.status_code in (200, 201), result.text
    cid: str = result.json()["id"]
    return cid


@dataclass
class Pair:
    """Two users in a direct conversation, each online on a different push process."""

    alice: dict[str, Any]
    bob: dict[str, Any]
    cid: str
    alice_ws: ClientConnection
    bob_ws: ClientConnection


@asynccontextmanager
async def pair_online(client: Client, stack: Stack) -> AsyncIterator[Pair]:
    push_a, push_b = procs(stack, "push")
    alice, bob = await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    alice_ws, _ = await open_ws(push_a, alice)
    bob_ws, _ = await open_ws(push_b, bob)
    try:
        yield Pair(alice, bob, cid, alice_ws, bob_ws)
    finally:
        await alice_ws.close()
        await bob_ws.close()
