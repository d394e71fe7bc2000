from __future__ import annotations

import uuid

import orjson

from api.deps import Deps
from chat.realtime.eventbus import channel
from tests.support import ApiClient, assert_problem
from tests.support.messages import stream


async def test_direct_conversation_is_one_per_pair(api: ApiClient, deps: Deps) -> None:
    alice, bob = await api.user(), await api.user()
    first = await api.post("/conversations", alice, json={"kind": "direct", "participant_ids": [bob.id]})
    assert first.status_code == 201, first.text
    conv = first.json
    assert conv["kind"] == "direct" and conv["title"] is None
    assert {p["user_id"] for p in conv["participants"]} == {alice.id, bob.id}
    assert conv["last_seq"] == 0 and conv["last_message"] is None and conv["unread_count"] == 0
    again = await api.post("/conversations", bob, json={"kind": "direct", "participant_ids": [alice.id]})
    assert again.status_code == 200
    assert again.json["id"] == conv["id"]
    # Both participants were told, once.
    for user in (alice, bob):
        created = [e for e in await stream(deps.redis, user.id) if e.type == "conversation.created"]
        assert len(created) == 1 and str(created[0].conversation_id) == conv["id"]


async def test_group_creator_is_owner(api: ApiClient) -> None:
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    result = await api.post(
        "/conversations",
        alice,
        json={"kind": "group", "title": "trip", "participant_ids": [bob.id, carol.id, bob.id]},
    )
    assert result.status_code == 201, result.text
    roles = {p["user_id"]: p["role"] for p in result.json["participants"]}
    assert roles == {alice.id: "owner", bob.id: "member", carol.id: "member"}
    assert result.json["title"] == "trip"


async def test_create_validation(api: ApiClient) -> None:
    alice, bob = await api.user(), await api.user()
    bad_bodies = [
        {"kind": "direct", "participant_ids": []},
        {"kind": "direct", "participant_ids": [alice.id]},
        {"kind": "direct", "participant_ids": [bob.id, str(uuid.uuid4())]},
        {"kind": "group", "participant_ids": [bob.id]},
        {"kind": "group", "title": "  ", "participant_ids": [bob.id]},
        {"kind": "channel", "participant_ids": [bob.id]},
        {"kind": "group", "title": "x", "participant_ids": ["not-a-uuid"]},
        {"kind": "group", "title": "x", "participant_ids": [str(uuid.uuid4())]},
    ]
    for body in bad_bodies:
        assert_problem(await api.post("/conversations", alice, json=body), 422)
    assert_problem(
        await api.post("/conversations", alice, body=b"{", headers={"Content-Type": "application/json"}), 400
    )
    assert_problem(
        await api.post("/conversations", json={"kind": "direct", "participant_ids": [bob.id]}), 401
    )


async def test_non_participant_sees_nothing(api: ApiClient) -> None:
    alice, bob, eve = await api.user(), await api.user(), await api.user()
    conv = await api.conversation(alice, bob)
    cid = conv["id"]
    assert_problem(await api.get(f"/conversations/{cid}", eve), 404)
    assert_problem(await api.get(f"/conversations/{cid}/messages", eve), 404)
    assert_problem(await api.post(f"/conversations/{cid}/messages", eve, json={"body": "hi"}), 404)
    assert_problem(
        await api.post(f"/conversations/{cid}/participants", eve, json={"user_ids": [eve.id]}), 404
    )
    assert_problem(await api.post(f"/conversations/{cid}/read", eve, json={"seq": 1}), 404)
    assert_problem(await api.post(f"/conversations/{cid}/typing", eve), 404)
    assert_problem(await api.delete(f"/conversations/{cid}/participants/{eve.id}", eve), 404)
    assert_problem(await api.get(f"/conversations/{uuid.uuid4()}", alice), 404)
    assert_problem(await api.get("/conversations/not-a-uuid", alice), 404)
    listed = await api.get("/conversations", eve)
    assert listed.json == {"items": [], "next_cursor": None}


async def test_participants_add_and_remove(api: ApiClient, deps: Deps) -> None:
    alice, bob, carol, dave = [await api.user() for _ in range(4)]
    conv = await api.conversation(alice, bob)
    cid = conv["id"]
    added = await api.post(f"/conversations/{cid}/participants", bob, json={"user_ids": [carol.id, alice.id]})
    assert added.status_code == 200, added.text
    assert {p["user_id"] for p in added.json["participants"]} == {alice.id, bob.id, carol.id}
    carol_events = [e.type for e in await stream(deps.redis, carol.id)]
    assert carol_events == ["participant.added"]
    assert_problem(await api.post(f"/conversations/{cid}/participants", bob, json={"user_ids": []}), 422)
    assert_problem(
        await api.post(f"/conversations/{cid}/participants", bob, json={"user_ids": [str(uuid.uuid4())]}), 422
    )

    # Only the owner removes others; anyone may leave.
    assert_problem(await api.delete(f"/conversations/{cid}/participants/{carol.id}", bob), 403)
    assert (await api.delete(f"/conversations/{cid}/participants/{carol.id}", alice)).status_code == 204
    assert_problem(await api.get(f"/conversations/{cid}", carol), 404)
    assert_problem(await api.delete(f"/conversations/{cid}/participants/{dave.id}", alice), 404)
    assert (await api.delete(f"/conversations/{cid}/participants/{bob.id}", bob)).status_code == 204
    # The owner leaving hands ownership on rather than orphaning the group.
    await api.post(f"/conversations/{cid}/participants", alice, json={"user_ids": [dave.id]})
    assert (await api.delete(f"/conversations/{cid}/participants/{alice.id}", alice)).status_code == 204
    view = await api.get(f"/conversations/{cid}", dave)
    assert [(p["user_id"], p["role"]) for p in view.json["participants"]] == [(dave.id, "owner")]
    removed = [e for e in await stream(deps.redis, carol.id) if e.type == "participant.removed"]
    assert len(removed) == 1 and str(removed[0].data.user_id) == carol.id


async def test_direct_participants_are_fixed(api: ApiClient) -> None:
    alice, bob, carol = await api.user(), await api.user(), await api.user()
    conv = await api.conversation(alice, bob, kind="direct")
    assert_problem(
        await api.post(f"/conversations/{conv['id']}/participants", alice, json={"user_ids": [carol.id]}), 422
    )
    assert_problem(await api.delete(f"/conversations/{conv['id']}/participants/{alice.id}", alice), 422)


async def test_list_pagination(api: ApiClient) -> None:
    alice = await api.user()
    others = [await api.user() for _ in range(5)]
    created = [(await api.conversation(alice, o, kind="direct"))["id"] for o in others]
    seen: list[str] = []
    cursor = None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await api.get("/conversations", alice, query_string=query)
        assert page.status_code == 200, page.text
        seen += [c["id"] for c in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))  # most recent activity first
    assert_problem(await api.get("/conversations", alice, query_string="limit=0"), 422)
    assert_problem(await api.get("/conversations", alice, query_string="limit=201"), 422)
    assert_problem(await api.get("/conversations", alice, query_string="limit=abc"), 422)
    assert_problem(await api.get("/conversations", alice, query_string="cursor=%%%"), 422)


async def test_typing_is_ephemeral_and_rate_limited(api: ApiClient, deps: Deps) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob, kind="direct")
    pubsub = deps.redis.pubsub()
    await pubsub.subscribe(channel(bob.id), channel(alice.id))
    for _ in range(2):
        await pubsub.get_message(timeout=1)
    assert (await api.post(f"/conversations/{conv['id']}/typing", alice)).status_code == 204
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert message is not None and message["channel"] == channel(bob.id).encode()
    frame = orjson.loads(message["data"])
    assert frame == {"type": "typing", "conversation_id": conv["id"], "data": {"user_id": alice.id}}
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None  # not to the typer
    again = await api.post(f"/conversations/{conv['id']}/typing", alice)
    assert_problem(again, 429)
    assert int(again.headers["retry-after"]) >= 1
    assert all(e.type != "typing" for e in await stream(deps.redis, bob.id))
    await pubsub.aclose()  # type: ignore[no-untyped-call]
