"""Blocking: a blocked user cannot open a direct conversation with the blocker or send into theirs."""

from __future__ import annotations

import uuid

from api.deps import Deps
from chat.domain.membership import members_key
from tests.support import ApiClient, assert_problem
from tests.support.messages import send
from tests.support.settings import RunWorker


async def test_a_blocked_user_can_neither_send_nor_open_a_direct_conversation(
    api: ApiClient, deps: Deps
) -> None:
    alice, bob, cid = await api.pair()
    group = (await api.conversation(alice, bob))["id"]
    assert (await api.put(f"/users/me/blocks/{bob.id}", alice)).status_code == 204
    [listed] = (await api.get("/users/me/blocks", alice)).json["items"]
    assert listed["user_id"] == bob.id and listed["created_at"]
    assert (await api.get("/users/me/blocks", bob)).json == {
        "items": [],
        "next_cursor": None,
    }  # bob is not told

    path = f"/conversations/{cid}/messages"
    refused = assert_problem(await api.post(path, bob, json={"body": "hi"}), 403)
    assert "blocked" in refused["detail"]
    assert (await api.post(path, alice, json={"body": "still mine to send"})).status_code == 202
    # Only direct conversations: a group they share carries on.
    assert (
        await api.post(f"/conversations/{group}/messages", bob, json={"body": "hi all"})
    ).status_code == 202
    direct = {"kind": "direct", "participant_ids": [alice.id]}
    assert_problem(await api.post("/conversations", bob, json=direct), 403)
    again = await api.post("/conversations", alice, json={"kind": "direct", "participant_ids": [bob.id]})
    assert again.status_code == 200 and again.json["id"] == cid

    # Redis forgetting the members changes nothing: the block comes back with them from Postgres.
    await deps.redis.delete(members_key(cid, ""))
    assert_problem(await api.post(path, bob, json={"body": "hi"}), 403)

    assert (await api.delete(f"/users/me/blocks/{bob.id}", alice)).status_code == 204
    assert (await api.post(path, bob, json={"body": "hi again"})).status_code == 202
    assert (await api.get("/users/me/blocks", alice)).json == {"items": [], "next_cursor": None}


async def test_a_block_before_the_conversation_holds_from_its_start(api: ApiClient) -> None:
    alice, carol = await api.user(), await api.user()
    assert (await api.put(f"/users/me/blocks/{carol.id}", alice)).status_code == 204
    assert_problem(
        await api.post("/conversations", carol, json={"kind": "direct", "participant_ids": [alice.id]}), 403
    )
    created = await api.post("/conversations", alice, json={"kind": "direct", "participant_ids": [carol.id]})
    assert created.status_code == 201, created.text
    cid = created.json["id"]
    assert_problem(await api.post(f"/conversations/{cid}/messages", carol, json={"body": "hi"}), 403)
    assert (await api.post(f"/conversations/{cid}/messages", alice, json={"body": "hi"})).status_code == 202


async def test_block_calls_check_their_target(api: ApiClient) -> None:
    alice, bob = await api.user(), await api.user()
    for call in (api.put, api.delete):  # a block and an unblock answer alike
        problem = assert_problem(await call(f"/users/me/blocks/{alice.id}", alice), 422)
        assert [e["field"] for e in problem["errors"]] == ["path.user_id"]
        assert_problem(await call(f"/users/me/blocks/{uuid.uuid4()}", alice), 404)
        assert_problem(await call("/users/me/blocks/not-a-uuid", alice), 404)
    # Unblocking someone never blocked is done already.
    assert (await api.delete(f"/users/me/blocks/{bob.id}", alice)).status_code == 204


async def test_my_blocks_are_a_cursor_list_newest_first(api: ApiClient) -> None:
    alice = await api.user()
    others = [await api.user() for _ in range(5)]
    for other in others:
        assert (await api.put(f"/users/me/blocks/{other.id}", alice)).status_code == 204
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get(f"/users/me/blocks?{query}", alice)).json
        assert len(page["items"]) <= 2
        seen += [item["user_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [o.id for o in reversed(others)]
    for bad in ("limit=0", "limit=201", "cursor=nonsense"):
        assert_problem(await api.get(f"/users/me/blocks?{bad}", alice), 422)


async def test_a_blocked_user_can_neither_react_nor_type_in_the_direct_conversation(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    group = (await api.conversation(alice, bob))["id"]
    direct_message = await send(api, alice, cid, "hello")
    group_message = await send(api, alice, group, "hello all")
    await run_worker()
    assert (await api.put(f"/messages/{direct_message['id']}/reactions/x", bob)).status_code == 204
    assert (await api.put(f"/users/me/blocks/{bob.id}", alice)).status_code == 204

    refused = assert_problem(await api.put(f"/messages/{direct_message['id']}/reactions/y", bob), 403)
    assert "blocked" in refused["detail"]
    assert_problem(await api.post(f"/conversations/{cid}/typing", bob), 403)
    # Taking a reaction back is still bob's; groups carry on; alice is not held back.
    assert (await api.delete(f"/messages/{direct_message['id']}/reactions/x", bob)).status_code == 204
    assert (await api.put(f"/messages/{group_message['id']}/reactions/y", bob)).status_code == 204
    assert (await api.post(f"/conversations/{group}/typing", bob)).status_code == 204
    assert (await api.put(f"/messages/{direct_message['id']}/reactions/z", alice)).status_code == 204
    assert (await api.post(f"/conversations/{cid}/typing", alice)).status_code == 204

    assert (await api.delete(f"/users/me/blocks/{bob.id}", alice)).status_code == 204
    assert (await api.put(f"/messages/{direct_message['id']}/reactions/y", bob)).status_code == 204
