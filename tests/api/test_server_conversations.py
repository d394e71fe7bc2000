"""`/server/conversations/...`: the app's backend keeps groups with exactly the members it names,
and posts into them as a member or as the system; through the real api, worker, Postgres, Redis."""

from __future__ import annotations

from typing import Any

import pytest

from api.deps import Deps
from chat.domain import membership
from chat.realtime.events import ConversationCreated, MessageCreated, ParticipantAdded, ParticipantRemoved
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.messages import stream
from tests.support.serverapi import app_user, server_key
from tests.support.settings import RunWorker


@pytest.fixture
async def server(deps: Deps) -> TestUser:
    return await server_key(deps)


async def _users(api: ApiClient, deps: Deps, unique: str, *names: str) -> dict[str, TestUser]:
    return {n: await app_user(api, deps, f"{n}-{unique}") for n in names}


async def test_put_creates_then_updates_to_exactly_the_members(
    api: ApiClient, deps: Deps, server: TestUser, unique: str
) -> None:
    u = await _users(api, deps, unique, "ann", "ben", "cat")
    path = f"/server/conversations/match-{unique}"
    body: dict[str, Any] = {
        "title": "Match",
        "member_ids": [f"ann-{unique}", f"ben-{unique}"],
        "metadata": {"n": 1},
    }
    created = await api.put(path, server, json=body)
    assert created.status_code == 201, created.text
    view = created.json
    assert view["external_id"] == f"match-{unique}" and view["kind"] == "group" and view["title"] == "Match"
    assert {(p["user_id"], p["role"]) for p in view["participants"]} == {
        (u["ann"].id, "member"),
        (u["ben"].id, "member"),
    }
    cid = view["id"]
    # Its members see it as theirs, and heard of it.
    assert (await api.get(f"/conversations/{cid}", u["ann"])).json["external_id"] == f"match-{unique}"
    assert any(isinstance(e, ConversationCreated) for e in await stream(deps.redis, u["ben"].id))
    assert_problem(await api.get(f"/conversations/{cid}", u["cat"]), 404)

    # Again with ben swapped for cat: cat comes in, ben goes, the id and metadata stay.
    body = {"title": "Match (final)", "member_ids": [f"ann-{unique}", f"cat-{unique}"]}
    updated = await api.put(path, server, json=body)
    assert updated.status_code == 200, updated.text
    assert updated.json["id"] == cid and updated.json["title"] == "Match (final)"
    assert {p["user_id"] for p in updated.json["participants"]} == {u["ann"].id, u["cat"].id}
    assert_problem(await api.get(f"/conversations/{cid}", u["ben"]), 404)
    ann_events = await stream(deps.redis, u["ann"].id)
    assert [str(e.data.user_id) for e in ann_events if isinstance(e, ParticipantAdded)] == [u["cat"].id]
    assert [str(e.data.user_id) for e in ann_events if isinstance(e, ParticipantRemoved)] == [u["ben"].id]
    # The Redis mirror follows: ben may no longer send, cat may.
    assert not await deps.redis.exists(membership.members_key(cid, ""))
    assert_problem(await api.post(f"/conversations/{cid}/messages", u["ben"], json={"body": "hi"}), 404)
    assert (
        await api.post(f"/conversations/{cid}/messages", u["cat"], json={"body": "hi"})
    ).status_code == 202
    # The same PUT again changes nothing.
    again = await api.put(path, server, json=body)
    assert again.status_code == 200
    assert len(await stream(deps.redis, u["ann"].id)) == len(ann_events)


async def test_put_refuses_unknown_members_and_big_metadata(
    api: ApiClient, deps: Deps, server: TestUser, unique: str
) -> None:
    await _users(api, deps, unique, "ann")
    path = f"/server/conversations/c-{unique}"
    unknown = await api.put(path, server, json={"title": "t", "member_ids": [f"ann-{unique}", "nobody-x"]})
    problem = assert_problem(unknown, 422)
    assert "nobody-x" in str(problem) and f"ann-{unique}" not in str(problem["errors"])
    big = {"title": "t", "member_ids": [f"ann-{unique}"], "metadata": {"x": "y" * 4100}}
    assert_problem(await api.put(path, server, json=big), 422)
    assert_problem(await api.put(path, server, json={"title": "t", "member_ids": [], "metadata": [1]}), 422)
    assert_problem(await api.put(path, server, json={"member_ids": []}), 422)
    # Nothing was made by the refusals.
    assert_problem(await api.post(f"{path}/members", server, json={"member_ids": [f"ann-{unique}"]}), 404)


async def test_members_are_added_and_removed(
    api: ApiClient, deps: Deps, server: TestUser, unique: str
) -> None:
    u = await _users(api, deps, unique, "ann", "ben")
    path = f"/server/conversations/m-{unique}"
    cid = (await api.put(path, server, json={"title": "t", "member_ids": [f"ann-{unique}"]})).json["id"]
    added = await api.post(f"{path}/members", server, json={"member_ids": [f"ben-{unique}", f"ann-{unique}"]})
    assert added.status_code == 200, added.text
    assert {p["user_id"] for p in added.json["participants"]} == {u["ann"].id, u["ben"].id}
    assert (await api.get(f"/conversations/{cid}", u["ben"])).status_code == 200
    assert_problem(await api.post(f"{path}/members", server, json={"member_ids": ["ghost"]}), 422)

    assert (await api.delete(f"{path}/members/ben-{unique}", server)).status_code == 204
    assert_problem(await api.get(f"/conversations/{cid}", u["ben"]), 404)
    assert_problem(await api.delete(f"{path}/members/ben-{unique}", server), 404)
    assert_problem(await api.delete(f"{path}/members/ghost", server), 404)
    assert_problem(await api.delete(f"/server/conversations/none-{unique}/members/ann-{unique}", server), 404)


async def test_messages_as_a_member_or_the_system(
    api: ApiClient, deps: Deps, server: TestUser, unique: str, run_worker: RunWorker
) -> None:
    u = await _users(api, deps, unique, "ann", "ben", "cat")
    path = f"/server/conversations/s-{unique}"
    members = [f"ann-{unique}", f"ben-{unique}"]
    cid = (await api.put(path, server, json={"title": "t", "member_ids": members})).json["id"]
    sent = await api.post(f"{path}/messages", server, json={"body": "kick-off!", "client_id": "k1"})
    assert sent.status_code == 202, sent.text
    assert sent.json["status"] == "queued" and sent.json["conversation_id"] == cid
    assert sent.headers["location"] == f"/api/v1/messages/{sent.json['id']}"
    repeat = await api.post(f"{path}/messages", server, json={"body": "kick-off!", "client_id": "k1"})
    assert (repeat.json["id"], repeat.json["seq"]) == (sent.json["id"], sent.json["seq"])
    assert_problem(await api.post(f"{path}/messages", server, json={"body": "other", "client_id": "k1"}), 409)
    as_ann = {"body": "gg", "client_id": "k2", "sender_id": f"ann-{unique}"}
    assert (await api.post(f"{path}/messages", server, json=as_ann)).status_code == 202
    not_member = {"body": "hi", "client_id": "k3", "sender_id": f"cat-{unique}"}
    assert_problem(await api.post(f"{path}/messages", server, json=not_member), 422)
    assert_problem(await api.post(f"{path}/messages", server, json={"body": "no client id"}), 422)
    assert_problem(await api.post(f"/server/conversations/x-{unique}/messages", server, json=as_ann), 404)

    assert await run_worker() == 2
    page = (await api.get(f"/conversations/{cid}/messages", u["ben"])).json["items"]
    assert [(m["kind"], m["sender_id"], m["body"]) for m in page] == [
        ("system", None, "kick-off!"),
        ("user", u["ann"].id, "gg"),
    ]
    created = [e for e in await stream(deps.redis, u["ben"].id) if isinstance(e, MessageCreated)]
    assert [(e.data.kind, e.data.sender_id and str(e.data.sender_id)) for e in created] == [
        ("system", None),
        ("user", u["ann"].id),
    ]


async def test_user_and_missing_tokens_are_refused(api: ApiClient, deps: Deps, unique: str) -> None:
    user = await app_user(api, deps, f"ann-{unique}")
    body = {"title": "t", "member_ids": [f"ann-{unique}"]}
    assert_problem(await api.put(f"/server/conversations/a-{unique}", user, json=body), 401)
    assert_problem(await api.put(f"/server/conversations/a-{unique}", json=body), 401)
