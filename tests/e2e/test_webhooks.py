"""A webhook through the real processes: bob holds a WebSocket on a push process, carol does not."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from websockets.asyncio.client import connect

from chat.cli import set_admin
from tests.support.settings import make_settings
from tests.support.stack import Client, Process, Stack
from tests.support.webhooks import Receiver, receiving, verify


@pytest.fixture(scope="module")
def web(stack: Stack) -> Process:
    # The worker re-reads the webhook list on every event: the one registered here counts at once.
    web = stack.start("web")
    stack.start("worker", WEBHOOK_REGISTRY_REFRESH_SECONDS="0")
    stack.start("push")
    return web


async def test_the_receiver_hears_of_the_recipient_without_a_websocket(
    client: Client, stack: Stack, web: Process, e2e_database: str
) -> None:
    [push] = [p for p in stack.processes if p.name == "push"]
    alice, bob, carol, admin = [await client.user() for _ in range(4)]
    assert await set_admin(make_settings(database_url=e2e_database), admin["username"], True)
    body = {"kind": "group", "title": "hooks", "participant_ids": [bob["id"], carol["id"]]}
    cid = (await client.http.post("/conversations", json=body, headers=alice["headers"])).json()["id"]

    async with receiving(Receiver()) as receiver:
        hook = await client.http.post(
            "/admin/webhooks",
            json={"url": receiver.url, "events": ["message.created"]},
            headers=admin["headers"],
        )
        assert hook.status_code == 201, hook.text
        async with connect(f"{push.ws_url}?token={bob['access_token']}", compression=None) as bob_ws:
            ready = orjson.loads(await asyncio.wait_for(bob_ws.recv(), 5))
            assert ready["type"] == "ready"
            sent = await client.http.post(
                f"/conversations/{cid}/messages", json={"body": "anyone?"}, headers=alice["headers"]
            )
            assert sent.status_code == 202, sent.text
            await asyncio.wait_for(receiver.arrived.wait(), 15)

    [delivery] = receiver.accepted
    event = delivery.json
    assert event["type"] == "message.created" and event["data"]["id"] == sent.json()["id"]
    assert event["data"]["offline_recipient_ids"] == [carol["id"]]
    assert verify(hook.json()["secret"], delivery)
