"""Deactivation closes a user's open sockets on every push process with 4403 within a second
(`chat.realtime.usercontrol.deactivated`), and only that user's."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from chat.realtime.eventbus import channel
from chat.realtime.usercontrol import deactivated
from tests.support.serverkeys import cli_server_key
from tests.support.sockets import direct, open_ws, procs
from tests.support.stack import E2E_REDIS_URL, Client, Process, Stack


@pytest.fixture(scope="module")
def push_stack(stack: Stack) -> Stack:
    # No worker: deactivation is the api's write and one publish, nothing queued.
    for kind in ("web", "push", "push"):
        stack.start(kind)
    return stack


@pytest.fixture
def web(push_stack: Stack) -> Process:
    [only] = procs(push_stack, "web")
    return only


async def closed_with(ws: ClientConnection, timeout: float) -> int | None:
    """The close code the server sent, waiting at most `timeout` seconds for it."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


async def test_deactivation_closes_sockets_on_both_push_processes_4403(
    client: Client, push_stack: Stack
) -> None:
    push_a, push_b = procs(push_stack, "push")
    bob, alice = await client.user(), await client.user()
    await direct(client, alice, bob)
    phone, _ = await open_ws(push_a, bob)
    laptop, _ = await open_ws(push_b, bob)
    others, _ = await open_ws(push_a, alice)
    bus = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
    try:
        started = time.monotonic()
        await deactivated(bus, uuid.UUID(bob["id"]))
        codes = await asyncio.gather(closed_with(phone, 1.0), closed_with(laptop, 1.0))
        assert list(codes) == [4403, 4403]
        assert time.monotonic() - started < 1.0
        assert phone.close_reason == "user deactivated or erased"
        # Alice's socket on the same process stays open and answers.
        await others.send('{"type":"ping"}')
        assert '"pong"' in str(await asyncio.wait_for(others.recv(), 5))
    finally:
        await bus.aclose()
        for ws in (phone, laptop, others):
            await ws.close()


async def test_a_publish_neither_event_nor_order_is_dropped(client: Client, push_stack: Stack) -> None:
    # Whatever a message body holds, an event is JSON and so never reads as an order; a raw
    # publish of something neither event nor order is dropped, not relayed.
    [push_a, _] = procs(push_stack, "push")
    bob = await client.user()
    ws, _ = await open_ws(push_a, bob)
    bus = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
    try:
        await bus.publish(channel(bob["id"]), "\x00control:unknown")
        await bus.publish(channel(bob["id"]), "not json")
        await ws.send('{"type":"ping"}')
        assert str(await asyncio.wait_for(ws.recv(), 5)) == '{"type":"pong"}'
    finally:
        await bus.aclose()
        await ws.close()


async def app_user(client: Client, key: dict[str, str], external_id: str) -> dict[str, Any]:
    """The app's user as its backend gets them a token: the user, with `access_token`."""
    minted = await client.http.post("/server/tokens", headers=key, json={"external_id": external_id})
    assert minted.status_code == 200, minted.text
    token = minted.json()["access_token"]
    me = await client.http.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    user: dict[str, Any] = me.json()
    return user | {"access_token": token}


async def test_the_server_api_deactivates_a_user_on_every_push_process_and_back(
    client: Client, push_stack: Stack
) -> None:
    push_a, push_b = procs(push_stack, "push")
    key = {"Authorization": f"Bearer {cli_server_key(push_stack)}"}
    carol, dave = await app_user(client, key, "e2e-carol"), await app_user(client, key, "e2e-dave")
    phone, _ = await open_ws(push_a, carol)
    laptop, _ = await open_ws(push_b, carol)
    others, _ = await open_ws(push_a, dave)
    try:
        started = time.monotonic()
        done = await client.http.post("/server/users/e2e-carol/deactivate", headers=key)
        assert done.status_code == 204, done.text
        bearer = {"Authorization": f"Bearer {carol['access_token']}"}
        assert (await client.http.get("/users/me", headers=bearer)).status_code == 401
        codes = await asyncio.gather(closed_with(phone, 1.0), closed_with(laptop, 1.0))
        assert list(codes) == [4403, 4403]
        assert time.monotonic() - started < 1.0
        await others.send('{"type":"ping"}')
        assert '"pong"' in str(await asyncio.wait_for(others.recv(), 5))

        again = await client.http.post("/server/users/e2e-carol/reactivate", headers=key)
        assert again.status_code == 204, again.text
        assert (await client.http.get("/users/me", headers=bearer)).status_code == 200
        back, ready = await open_ws(push_b, carol)
        assert ready["type"] == "ready" and ready["user_id"] == carol["id"]
        await back.close()
    finally:
        for ws in (phone, laptop, others):
            await ws.close()
