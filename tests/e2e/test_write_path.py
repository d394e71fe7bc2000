"""The web and worker Procfile lines as real processes, driven over HTTP only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.stack import Client, Process, Stack


@pytest.fixture(scope="module")
def web(stack: Stack) -> Process:
    """The web process, beside two workers."""
    process = stack.start("web")
    stack.start("worker")
    stack.start("worker")
    return process


async def persisted(client: Client, user: dict[str, Any], message_id: str) -> dict[str, Any]:
    for _ in range(100):
        got = await client.http.get(f"/messages/{message_id}", headers=user["headers"])
        if got.status_code == 200:
            message: dict[str, Any] = got.json()
            return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} was never persisted")


async def test_send_persist_read_over_http(client: Client) -> None:
    alice, bob = await client.user(), await client.user()
    conv = await client.http.post(
        "/conversations", json={"kind": "direct", "participant_ids": [bob["id"]]}, headers=alice["headers"]
    )
    assert conv.status_code == 201, conv.text
    cid = conv.json()["id"]
    sends = []
    for i in range(20):
        sent = await client.http.post(
            f"/conversations/{cid}/messages",
            json={"body": f"hello {i}", "client_id": f"k{i}"},
            headers=alice["headers"],
        )
        assert sent.status_code == 202, sent.text
        assert sent.headers["location"] == f"/api/v1/messages/{sent.json()['id']}"
        sends.append(sent.json())
    assert [s["seq"] for s in sends] == list(range(1, 21))
    last = await persisted(client, bob, sends[-1]["id"])
    assert last["body"] == "hello 19"
    for s in sends:
        await persisted(client, bob, s["id"])
    repeat = await client.http.post(
        f"/conversations/{cid}/messages",
        json={"body": "hello 3", "client_id": "k3"},
        headers=alice["headers"],
    )
    assert repeat.status_code == 202 and repeat.json()["id"] == sends[3]["id"] and repeat.json()["seq"] == 4
    history = await client.http.get(f"/conversations/{cid}/messages", headers=bob["headers"])
    assert [m["body"] for m in history.json()["items"]] == [f"hello {i}" for i in range(20)]
    job = await client.http.get(f"/jobs/{sends[0]['job_id']}", headers=alice["headers"])
    assert job.json()["status"] == "complete"
    listed = await client.http.get("/conversations", headers=bob["headers"])
    [item] = listed.json()["items"]
    assert item["unread_count"] == 20 and item["last_message"]["seq"] == 20


async def test_a_stored_message_is_found_by_search_only_by_its_participants(client: Client) -> None:
    alice, bob, eve = await client.user(), await client.user(), await client.user()
    conv = await client.http.post(
        "/conversations", json={"kind": "direct", "participant_ids": [bob["id"]]}, headers=alice["headers"]
    )
    cid = conv.json()["id"]
    sent = await client.http.post(
        f"/conversations/{cid}/messages",
        json={"body": "the quarterly zeppelin report"},
        headers=alice["headers"],
    )
    await persisted(client, bob, sent.json()["id"])
    found = await client.http.get("/search/messages", params={"q": "Zeppelin report"}, headers=bob["headers"])
    assert [m["id"] for m in found.json()["items"]] == [sent.json()["id"]]
    nothing = await client.http.get("/search/messages", params={"q": "zeppelin"}, headers=eve["headers"])
    assert nothing.status_code == 200 and nothing.json() == {"items": [], "next_cursor": None}
