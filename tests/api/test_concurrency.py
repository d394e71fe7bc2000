"""Every write route under a burst of identical and of conflicting requests, all in flight at once.

Each test fires its requests with one `asyncio.gather` through the in-process api, then checks that
no answer is a 5xx and that what the answers say agrees with what GET and Postgres say afterwards:
the outcome is one that some serial order of the same requests would have produced.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from falcon import inspect
from falcon.testing import Result
from sqlalchemy import func, select

from api.deps import Deps
from chat.cli import set_admin
from chat.jobqueue import deadletters
from chat.jobqueue.state import job_state
from chat.models import Conversation, Message, Participant, RefreshToken, User
from chat.realtime import events
from chat.realtime.eventbus import stream_key
from tests.support import PASSWORD, ApiClient, TestUser, assert_problem
from tests.support.serverapi import server_key
from tests.support.settings import RunWorker

N = 20


async def burst(requests: Iterable[Awaitable[Result]]) -> list[Result]:
    """All at once; none may be a 5xx."""
    results = await asyncio.gather(*requests)
    failed = [f"{r.status_code}: {r.text}" for r in results if r.status_code >= 500]
    assert not failed, failed
    return list(results)


def tally(results: Iterable[Result]) -> Counter[int]:
    return Counter(r.status_code for r in results)


async def stream(deps: Deps, user: TestUser, kind: str) -> list[Any]:
    entries = await deps.redis.xrange(stream_key(user.id))
    decoded = [events.decode(fields[b"e"]) for _, fields in entries]
    return [e for e in decoded if e.type == kind]


async def scalar(deps: Deps, query: Any) -> Any:
    async with deps.engine.connect() as conn:
        return await conn.scalar(query)


# -- accounts --------------------------------------------------------------------------------------


async def test_registering_one_username_at_once_makes_one_user(api: ApiClient, deps: Deps) -> None:
    spellings = ["Same_Name", "same_name", "SAME_NAME"]
    results = await burst(
        api.post("/auth/register", json={"username": spellings[i % 3], "password": PASSWORD})
        for i in range(N)
    )
    assert tally(results) == {201: 1, 409: N - 1}
    for loser in (r for r in results if r.status_code == 409):
        assert_problem(loser, 409)
    [winner] = [r.json for r in results if r.status_code == 201]
    assert await scalar(deps, select(func.count()).where(User.username_key == "same_name")) == 1
    assert (
        await scalar(deps, select(User.username).where(User.id == uuid.UUID(winner["id"])))
        == winner["username"]
    )
    login = await api.post("/auth/login", json={"username": "same_name", "password": PASSWORD})
    assert login.status_code == 200


async def test_logging_in_at_once_gives_each_a_login_of_its_own(api: ApiClient, deps: Deps) -> None:
    alice = await api.user()
    body = {"username": alice.username, "password": PASSWORD}
    results = await burst(api.post("/auth/login", json=body) for _ in range(N))
    assert tally(results) == {200: N}
    tokens = {r.json["refresh_token"] for r in results}
    assert len(tokens) == N
    families = select(func.count(func.distinct(RefreshToken.family_id))).where(
        RefreshToken.user_id == uuid.UUID(alice.id)
    )
    assert await scalar(deps, families) == N + 1  # and the login of `api.user`
    refreshed = await burst(api.post("/auth/refresh", json={"refresh_token": t}) for t in tokens)
    assert tally(refreshed) == {200: N}


async def test_one_refresh_token_used_at_once_rotates_once_and_ends_that_login(
    api: ApiClient, deps: Deps
) -> None:
    alice = await api.user()
    login = (await api.post("/auth/login", json={"username": alice.username, "password": PASSWORD})).json
    results = await burst(
        api.post("/auth/refresh", json={"refresh_token": login["refresh_token"]}) for _ in range(N)
    )
    assert tally(results) == {200: 1, 401: N - 1}
    for loser in (r for r in results if r.status_code == 401):
        assert_problem(loser, 401)
    [winner] = [r.json for r in results if r.status_code == 200]
    # The repeats are re-use of a rotated token: the whole login is revoked, the new token with it
    # (docs/api.md). Its access token lives on until it expires; other logins are untouched.
    assert_problem(await api.post("/auth/refresh", json={"refresh_token": winner["refresh_token"]}), 401)
    assert (
        await api.get("/users/me", headers={"Authorization": f"Bearer {winner['access_token']}"})
    ).status_code == 200
    live = select(func.count()).where(
        RefreshToken.user_id == uuid.UUID(alice.id), RefreshToken.revoked_at.is_(None)
    )
    assert await scalar(deps, live) == 1  # the login of `api.user`
    other = await api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert other.status_code == 200


async def test_many_logins_each_refreshed_at_once_rotate_once_each(api: ApiClient) -> None:
    # Losers of one token's race each end its login, while other requests still wait to claim the
    # token. With row locks taken in two different orders, about one burst in twenty of these
    # deadlocked (a 503); the rounds give that a fair chance to show.
    alice = await api.user()
    body = {"username": alice.username, "password": PASSWORD}
    for _ in range(3):
        logins = [(await api.post("/auth/login", json=body)).json["refresh_token"] for _ in range(8)]
        results = await burst(
            api.post("/auth/refresh", json={"refresh_token": token}) for token in logins for _ in range(N)
        )
        assert tally(results) == {200: len(logins), 401: len(logins) * (N - 1)}


async def test_logging_out_at_once_ends_the_login_once(api: ApiClient, deps: Deps) -> None:
    alice = await api.user()
    login = (await api.post("/auth/login", json={"username": alice.username, "password": PASSWORD})).json
    token = {"refresh_token": login["refresh_token"]}
    assert tally(await burst(api.post("/auth/logout", alice, json=token) for _ in range(N))) == {204: N}
    assert_problem(await api.post("/auth/refresh", json=token), 401)
    assert (await api.post("/auth/refresh", json={"refresh_token": alice.refresh_token})).status_code == 200


async def test_a_logout_or_a_reuse_racing_a_refresh_still_ends_the_login(api: ApiClient, deps: Deps) -> None:
    alice = await api.user()

    async def login() -> str:
        body = {"username": alice.username, "password": PASSWORD}
        token: str = (await api.post("/auth/login", json=body)).json["refresh_token"]
        return token

    async def refresh(token: str) -> Result:
        return await api.post("/auth/refresh", json={"refresh_token": token})

    for _ in range(8):
        # The app logs out while a background refresh of the same token is in flight.
        token = await login()
        raced = await burst([refresh(token), api.post("/auth/logout", alice, json={"refresh_token": token})])
        # A stolen, already rotated token comes back while its successor is being refreshed.
        first = await login()
        second = (await refresh(first)).json["refresh_token"]
        raced += await burst([refresh(second), refresh(first)])
        # In any serial order the login ends: a refresh that won handed out a token that the
        # logout or the re-use must have revoked as well.
        for result in raced:
            assert result.status_code in (200, 204, 401), result.text
            if result.status_code == 200:
                assert_problem(await refresh(result.json["refresh_token"]), 401)
    live = select(func.count()).where(
        RefreshToken.user_id == uuid.UUID(alice.id), RefreshToken.revoked_at.is_(None)
    )
    assert await scalar(deps, live) == 1  # the login of `api.user`


async def test_patching_me_at_once_answers_each_with_its_own_write(api: ApiClient, deps: Deps) -> None:
    alice = await api.user()
    names = [f"name {i}" for i in range(N)]
    results = await burst(api.patch("/users/me", alice, json={"display_name": n}) for n in names)
    assert tally(results) == {200: N}
    assert [r.json["display_name"] for r in results] == names
    final = (await api.get("/users/me", alice)).json["display_name"]
    assert final in names
    assert await scalar(deps, select(User.display_name).where(User.id == uuid.UUID(alice.id))) == final


# -- conversations ---------------------------------------------------------------------------------


async def test_both_sides_opening_their_direct_conversation_at_once_make_one(
    api: ApiClient, deps: Deps
) -> None:
    alice, bob = await api.user(), await api.user()
    results = await burst(
        api.post("/conversations", me, json={"kind": "direct", "participant_ids": [other.id]})
        for me, other in [(alice, bob), (bob, alice)] * (N // 2)
    )
    assert tally(results) == {201: 1, 200: N - 1}
    assert len({r.json["id"] for r in results}) == 1
    cid = uuid.UUID(results[0].json["id"])
    assert await scalar(deps, select(func.count()).select_from(Conversation)) == 1
    members = select(func.count()).where(Participant.conversation_id == cid)
    assert await scalar(deps, members) == 2
    for user in (alice, bob):
        assert len(await stream(deps, user, "conversation.created")) == 1
        assert [c["id"] for c in (await api.get("/conversations", user)).json["items"]] == [str(cid)]


async def test_creating_groups_at_once_makes_each(api: ApiClient, deps: Deps) -> None:
    alice, bob = await api.user(), await api.user()
    body = {"kind": "group", "title": "same title", "participant_ids": [bob.id]}
    results = await burst(api.post("/conversations", alice, json=body) for _ in range(N))
    assert tally(results) == {201: N}
    ids = {r.json["id"] for r in results}
    assert len(ids) == N
    assert await scalar(deps, select(func.count()).select_from(Participant)) == 2 * N
    listed = (await api.get("/conversations", bob, query_string="limit=200")).json["items"]
    assert {c["id"] for c in listed} == ids


async def test_adding_the_same_and_different_participants_at_once(api: ApiClient, deps: Deps) -> None:
    owner, member = await api.user(), await api.user()
    people = [await api.user() for _ in range(8)]
    gid = (await api.conversation(owner, member))["id"]
    requests = []
    for i in range(N):
        adder = owner if i % 2 else member
        wanted = people[:3] if i % 3 == 0 else [people[3 + i % 5]]
        requests.append(
            api.post(f"/conversations/{gid}/participants", adder, json={"user_ids": [p.id for p in wanted]})
        )
    results = await burst(requests)
    assert tally(results) == {200: N}
    expected = {owner.id, member.id, *(p.id for p in people)}
    view = (await api.get(f"/conversations/{gid}", owner)).json
    assert {p["user_id"] for p in view["participants"]} == expected
    assert [p["role"] for p in view["participants"]].count("owner") == 1
    in_db = select(func.count()).where(Participant.conversation_id == uuid.UUID(gid))
    assert await scalar(deps, in_db) == len(expected)
    # Each newcomer was announced once, however many requests named them.
    added = Counter(str(e.data.user_id) for e in await stream(deps, owner, "participant.added"))
    assert added == {p.id: 1 for p in people}
    # And the members mirror in Redis lets every newcomer send.
    sends = await burst(api.post(f"/conversations/{gid}/messages", p, json={"body": "hi"}) for p in people)
    assert tally(sends) == {202: len(people)}


async def test_removing_and_leaving_at_once_removes_once(api: ApiClient, deps: Deps) -> None:
    owner, bob, carol = await api.user(), await api.user(), await api.user()
    gid = (await api.conversation(owner, bob, carol))["id"]
    path = f"/conversations/{gid}/participants/{bob.id}"
    requests = [api.delete(path, owner) for _ in range(N // 2)] + [
        api.delete(path, bob) for _ in range(N // 2)
    ]
    random.shuffle(requests)
    results = await burst(requests)
    # As in some serial order: the first removal is a 204, after it bob is nobody's to remove.
    assert tally(results) == {204: 1, 404: N - 1}
    view = (await api.get(f"/conversations/{gid}", owner)).json
    assert {p["user_id"] for p in view["participants"]} == {owner.id, carol.id}
    removed = await stream(deps, owner, "participant.removed")
    assert [str(e.data.user_id) for e in removed] == [bob.id]
    assert_problem(await api.post(f"/conversations/{gid}/messages", bob, json={"body": "still here?"}), 404)


async def test_the_owner_and_the_heir_leaving_at_once_leave_one_owner(api: ApiClient, deps: Deps) -> None:
    for _ in range(5):
        owner, heir, last = await api.user(), await api.user(), await api.user()
        gid = (await api.conversation(owner, heir))["id"]
        assert (
            await api.post(f"/conversations/{gid}/participants", owner, json={"user_ids": [last.id]})
        ).status_code == 200
        results = await burst(
            [
                api.delete(f"/conversations/{gid}/participants/{owner.id}", owner),
                api.delete(f"/conversations/{gid}/participants/{heir.id}", heir),
            ]
        )
        assert tally(results) == {204: 2}
        roles = await _roles(deps, gid)
        assert roles == {uuid.UUID(last.id): "owner"}, roles


async def _roles(deps: Deps, gid: str) -> dict[uuid.UUID, str]:
    async with deps.engine.connect() as conn:
        rows = await conn.execute(
            select(Participant.user_id, Participant.role).where(Participant.conversation_id == uuid.UUID(gid))
        )
        return {user_id: role for user_id, role in rows}


async def test_read_markers_at_once_end_at_the_highest(api: ApiClient, deps: Deps) -> None:
    alice, bob, cid = await api.pair()
    for i in range(N):
        assert (
            await api.post(f"/conversations/{cid}/messages", alice, json={"body": f"m{i}"})
        ).status_code == 202
    seqs = list(range(1, N + 1))
    random.shuffle(seqs)
    results = await burst(api.post(f"/conversations/{cid}/read", bob, json={"seq": s}) for s in seqs)
    assert tally(results) == {204: N}
    view = (await api.get(f"/conversations/{cid}", bob)).json
    assert {p["user_id"]: p["last_read_seq"] for p in view["participants"]}[bob.id] == N
    marker = select(Participant.last_read_seq).where(
        Participant.conversation_id == uuid.UUID(cid), Participant.user_id == uuid.UUID(bob.id)
    )
    assert await scalar(deps, marker) == N
    # Each announced move was a real one: no seq twice, and the last move, to N, among them.
    announced = [e.data.seq for e in await stream(deps, alice, "conversation.read")]
    assert max(announced) == N and len(set(announced)) == len(announced)


async def test_typing_at_once_is_one_notification(api: ApiClient, deps: Deps) -> None:
    alice, _, cid = await api.pair()
    results = await burst(api.post(f"/conversations/{cid}/typing", alice) for _ in range(N))
    assert tally(results) == {204: 1, 429: N - 1}
    for limited in (r for r in results if r.status_code == 429):
        assert_problem(limited, 429)
        assert int(limited.headers["retry-after"]) >= 1


# -- messages --------------------------------------------------------------------------------------


async def test_one_client_id_sent_at_once_is_one_message(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob = await api.user(), await api.user()
    cid = (await api.conversation(alice, bob))["id"]
    path = f"/conversations/{cid}/messages"
    # The first sends of a new conversation, so the seeding of Redis races as well; plain sends
    # interleaved with the repeats.
    requests = [api.post(path, alice, json={"body": "once", "client_id": "c1"}) for _ in range(N)]
    requests += [api.post(path, bob, json={"body": f"plain {i}"}) for i in range(10)]
    results = await burst(requests)
    assert tally(results) == {202: N + 10}
    repeats, plain = results[:N], results[N:]
    assert len({(r.json["id"], r.json["seq"]) for r in repeats}) == 1
    seqs = sorted([repeats[0].json["seq"], *(r.json["seq"] for r in plain)])
    assert seqs == list(range(1, 12))
    await run_worker()
    history = (await api.get(path, bob)).json["items"]
    assert [m["seq"] for m in history] == seqs
    stored = select(func.count()).where(Message.conversation_id == uuid.UUID(cid), Message.client_id == "c1")
    assert await scalar(deps, stored) == 1


async def test_one_client_id_with_different_bodies_at_once_keeps_one(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    path = f"/conversations/{cid}/messages"
    results = await burst(
        api.post(path, alice, json={"body": f"version {i}", "client_id": "k"}) for i in range(N)
    )
    assert tally(results) == {202: 1, 409: N - 1}
    for loser in (r for r in results if r.status_code == 409):
        assert_problem(loser, 409)
    [winner] = [(i, r.json) for i, r in enumerate(results) if r.status_code == 202]
    await run_worker()
    [message] = (await api.get(path, bob)).json["items"]
    assert (message["id"], message["seq"], message["body"]) == (winner[1]["id"], 1, f"version {winner[0]}")


async def test_edits_at_once_apply_in_the_order_they_were_accepted(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    sent = (await api.post(f"/conversations/{cid}/messages", alice, json={"body": "first"})).json
    await run_worker()
    results = await burst(
        api.patch(f"/messages/{sent['id']}", alice, json={"body": f"edit {i}"}) for i in range(N)
    )
    assert tally(results) == {202: N}
    assert len({r.json["job_id"] for r in results}) == N
    await run_worker()
    # Each edit carries the moment the api accepted it; the latest accepted is the one that stays.
    accepted = []
    for r in results:
        state = await job_state(deps.redis, deps.settings.queue_name, r.json["job_id"])
        assert state.status == "complete" and state.success, state
        accepted.append((datetime.fromisoformat(state.args[0]["edited_at"]), state.args[0]["body"]))
    last_at, last_body = max(accepted)
    message = (await api.get(f"/messages/{sent['id']}", bob)).json
    assert (message["body"], message["deleted"]) == (last_body, False)
    assert datetime.fromisoformat(message["edited_at"]) == last_at
    # Only edits that applied were announced, the last accepted among them. (Their order on the
    # stream is the order the worker finished the jobs in, which may differ from edited_at.)
    updates = [e.data.edited_at for e in await stream(deps, bob, "message.updated")]
    assert max(updates) == last_at and len(updates) == len(set(updates))


async def test_edits_and_deletes_at_once_end_deleted(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    owner, bob = await api.user(), await api.user()
    gid = (await api.conversation(owner, bob))["id"]
    sent = (await api.post(f"/conversations/{gid}/messages", bob, json={"body": "first"})).json
    await run_worker()
    path = f"/messages/{sent['id']}"
    requests = [api.patch(path, bob, json={"body": f"edit {i}"}) for i in range(N - 10)]
    requests += [api.delete(path, bob) for _ in range(5)] + [api.delete(path, owner) for _ in range(5)]
    random.shuffle(requests)
    results = await burst(requests)
    assert tally(results) == {202: N}
    await run_worker()
    message = (await api.get(path, bob)).json
    assert (message["body"], message["deleted"]) == (None, True)
    row = select(Message.body, Message.deleted).where(Message.id == uuid.UUID(sent["id"]))
    async with deps.engine.connect() as conn:
        assert tuple((await conn.execute(row)).one()) == (None, True)
    # Once deleted, nothing brings it back, and an edit now is refused.
    assert_problem(await api.patch(path, bob, json={"body": "too late"}), 409)
    last = (await api.get(f"/conversations/{gid}", owner)).json["last_message"]
    assert (last["body"], last["deleted"]) == (None, True)


# -- admin -----------------------------------------------------------------------------------------


async def _dead_letter(deps: Deps, job_id: str) -> None:
    entry = {
        "job_id": job_id,
        "function": "edit_message",
        "args": [{}],
        "error": "ValueError: x",
        "reason": "raised",
        "traceback": "Traceback: x",
        "tries": 1,
        "enqueued_at": None,
        "failed_at": "2026-11-27T00:00:00+00:00",
        "worker_id": None,
    }
    await deadletters.record(deps.redis, entry, 100, 10**9)


async def test_retrying_and_discarding_one_dead_letter_at_once_does_one(api: ApiClient, deps: Deps) -> None:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    queue = deps.settings.queue_name

    await _dead_letter(deps, "edit:retried")
    results = await burst(api.post("/admin/dead-letters/edit:retried/retry", admin) for _ in range(N))
    statuses = tally(results)
    assert statuses[202] == 1 and statuses[202] + statuses[404] + statuses[409] == N, statuses
    assert await deadletters.get(deps.redis, "edit:retried") is None
    assert (await job_state(deps.redis, queue, "edit:retried")).status == "queued"
    assert await deps.redis.zcard(queue) == 1

    await _dead_letter(deps, "edit:contested")
    requests = [api.post("/admin/dead-letters/edit:contested/retry", admin) for _ in range(N // 2)]
    requests += [api.delete("/admin/dead-letters/edit:contested", admin) for _ in range(N // 2)]
    random.shuffle(requests)
    statuses = tally(await burst(requests))
    # Either the retry or the discard came first; after it, there is nothing left for the others.
    assert statuses[202] + statuses[204] == 1, statuses
    assert statuses[202] + statuses[204] + statuses[404] + statuses[409] == N, statuses
    assert await deadletters.get(deps.redis, "edit:contested") is None
    state = await job_state(deps.redis, queue, "edit:contested")
    assert state.status == ("queued" if statuses[202] else "not_found")
    assert await deadletters.count(deps.redis) == 0


async def test_registering_at_once_makes_one_webhook_each_and_deleting_one_at_once_deletes_it_once(
    api: ApiClient, deps: Deps
) -> None:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    body = {"url": "https://hooks.example.com/in", "events": ["message.created"]}
    # A POST is no upsert: as with Stripe's or GitHub's endpoints, each registration is its own.
    created = await burst(api.post("/admin/webhooks", admin, json=body) for _ in range(N))
    assert tally(created) == {201: N}
    ids = {r.json["id"] for r in created}
    assert len(ids) == N and len({r.json["secret"] for r in created}) == N
    listed = (await api.get("/admin/webhooks", admin)).json["items"]
    assert {h["id"] for h in listed} == ids

    doomed = sorted(ids)[0]
    statuses = tally(await burst(api.delete(f"/admin/webhooks/{doomed}", admin) for _ in range(N)))
    assert statuses == {204: 1, 404: N - 1}, statuses
    listed = (await api.get("/admin/webhooks", admin)).json["items"]
    assert {h["id"] for h in listed} == ids - {doomed}


# -- coverage --------------------------------------------------------------------------------------


# Every write route of the app, and the test above that fires a burst at it.
async def test_the_same_reaction_at_once_is_stored_and_announced_once(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    sent = (await api.post(f"/conversations/{cid}/messages", alice, json={"body": "react to me"})).json
    await run_worker()
    path = f"/messages/{sent['id']}/reactions/%F0%9F%91%8D"
    results = await burst([api.put(path, bob) for _ in range(N)] + [api.put(path, alice) for _ in range(N)])
    assert tally(results) == {204: 2 * N}
    await run_worker()
    message = (await api.get(f"/messages/{sent['id']}", bob)).json
    assert message["reactions"] == [{"emoji": "\N{THUMBS UP SIGN}", "count": 2, "me": True}]
    added = await stream(deps, alice, "reaction.added")
    assert sorted(str(e.data.user_id) for e in added) == sorted([alice.id, bob.id])


async def test_adds_and_removes_at_once_end_as_the_last_accepted(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    sent = (await api.post(f"/conversations/{cid}/messages", alice, json={"body": "react to me"})).json
    await run_worker()
    path = f"/messages/{sent['id']}/reactions/ok"
    requests = [api.put(path, bob) for _ in range(N // 2)] + [api.delete(path, bob) for _ in range(N // 2)]
    random.shuffle(requests)
    results = await burst(requests)
    assert tally(results) == {204: N}
    await run_worker()
    # The reaction ends as the change the api accepted last says, and the events alternate with it.
    last = max(
        [
            (datetime.fromisoformat(state.args[0]["changed_at"]), state.args[0]["present"])
            for state in [
                await job_state(deps.redis, deps.settings.queue_name, job_id)
                for job_id in [
                    k.decode().removeprefix("arq:result:")
                    for k in await deps.redis.keys("arq:result:react:*")
                ]
            ]
        ]
    )
    assert len(await deps.redis.keys("arq:result:react:*")) == N
    message = (await api.get(f"/messages/{sent['id']}", alice)).json
    assert message["reactions"] == ([{"emoji": "ok", "count": 1, "me": False}] if last[1] else [])
    changes = [e.type for e in await stream(deps, alice, "reaction.added")] + [
        e.type for e in await stream(deps, alice, "reaction.removed")
    ]
    assert changes.count("reaction.added") - changes.count("reaction.removed") == (1 if last[1] else 0)


async def test_settings_at_once_end_as_one_of_them_and_stay_the_callers_own(api: ApiClient) -> None:
    alice, bob, cid = await api.pair()
    wanted = [i % 2 == 0 for i in range(N)]
    results = await burst(
        api.patch(f"/conversations/{cid}/settings", alice, json={"muted": m}) for m in wanted
    )
    assert tally(results) == {200: N}
    assert sorted(r.json["muted"] for r in results) == sorted(wanted)
    view = (await api.get(f"/conversations/{cid}", alice)).json
    assert view["muted"] in (True, False)
    assert (await api.get(f"/conversations/{cid}", bob)).json["muted"] is False  # bob's own is untouched


async def test_blocks_and_unblocks_at_once_end_as_one_of_them(api: ApiClient) -> None:
    alice, bob, cid = await api.pair()
    path = f"/users/me/blocks/{bob.id}"
    requests = [api.put(path, alice) for _ in range(N // 2)] + [
        api.delete(path, alice) for _ in range(N // 2)
    ]
    random.shuffle(requests)
    assert tally(await burst(requests)) == {204: N}
    blocked = [b["user_id"] for b in (await api.get("/users/me/blocks", alice)).json["items"]]
    assert blocked in ([], [bob.id])
    # Whichever won, bob's sends agree with it: the members were seeded afresh after the last change.
    sent = await api.post(f"/conversations/{cid}/messages", bob, json={"body": "hi"})
    assert sent.status_code == (403 if blocked else 202), sent.text


async def test_the_same_block_at_once_is_one_block(api: ApiClient) -> None:
    alice, bob, cid = await api.pair()
    assert tally(await burst(api.put(f"/users/me/blocks/{bob.id}", alice) for _ in range(N))) == {204: N}
    assert [b["user_id"] for b in (await api.get("/users/me/blocks", alice)).json["items"]] == [bob.id]
    assert_problem(await api.post(f"/conversations/{cid}/messages", bob, json={"body": "hi"}), 403)


async def test_uploads_at_once_are_each_their_own(api: ApiClient) -> None:
    alice = await api.user()
    body = {"filename": "a.txt", "content_type": "text/plain", "size": 3}
    results = await burst(api.post("/uploads", alice, json=body) for _ in range(N))
    assert tally(results) == {201: N}
    assert len({r.json["id"] for r in results}) == N


async def _uploaded(api: ApiClient, user: TestUser, data: bytes) -> tuple[str, str, dict[str, str]]:
    body = {"filename": "a.txt", "content_type": "text/plain", "size": len(data)}
    ticket = (await api.post("/uploads", user, json=body)).json
    return ticket["id"], ticket["upload_url"], ticket["headers"]


async def test_one_upload_put_at_once_is_stored_once_and_taken_by_one_send(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    upload_id, url, headers = await _uploaded(api, alice, b"abc")
    parts = urlsplit(url)  # absolute, on the test client's host
    path, query = parts.path, parts.query
    puts = await burst(
        api.conductor.simulate_put(path, query_string=query, body=b"abc", headers=headers) for _ in range(N)
    )
    assert tally(puts) == {204: 1, 409: N - 1}
    # Sends naming the same upload at once: one message gets it, the rest are told it is taken.
    sends = await burst(
        api.post(f"/conversations/{cid}/messages", alice, json={"body": "x", "attachments": [upload_id]})
        for _ in range(N)
    )
    assert tally(sends) == {202: 1, 422: N - 1}
    assert await run_worker() == 1
    [item] = (await api.get(f"/conversations/{cid}/messages", bob)).json["items"]
    assert [a["id"] for a in item["attachments"]] == [upload_id]


# -- the server API: the app's backend retries, and its retries may race --------------------------


async def test_the_same_server_user_put_at_once_is_one_user(api: ApiClient, deps: Deps, unique: str) -> None:
    server = await server_key(deps)
    path = f"/server/users/burst-{unique}"
    results = await burst(api.put(path, server, json={"display_name": f"n{i}"}) for i in range(N))
    assert tally(results) == {201: 1, 200: N - 1}
    assert len({r.json["id"] for r in results}) == 1
    assert await scalar(deps, select(func.count()).where(User.external_id == f"burst-{unique}")) == 1


async def test_tokens_for_a_new_user_at_once_make_one_user(api: ApiClient, deps: Deps, unique: str) -> None:
    server = await server_key(deps)
    body = {"external_id": f"tok-{unique}"}
    results = await burst(api.post("/server/tokens", server, json=body) for _ in range(N))
    assert tally(results) == {200: N}
    mine = await burst(api.get("/users/me", TestUser("", "", r.json["access_token"], "")) for r in results)
    assert len({m.json["id"] for m in mine}) == 1


async def test_deactivating_and_reactivating_at_once_end_as_one_of_them(
    api: ApiClient, deps: Deps, unique: str
) -> None:
    server = await server_key(deps)
    path = f"/server/users/flip-{unique}"
    await api.put(path, server, json={})
    minted = await api.post("/server/tokens", server, json={"external_id": f"flip-{unique}"})
    token = TestUser("", "", minted.json["access_token"], "")
    flips = [api.post(f"{path}/{'de' if i % 2 else 're'}activate", server) for i in range(N)]
    assert tally(await burst(flips)) == {204: N}
    deactivated = (await api.get(path, server)).json["deactivated"]
    assert (await api.get("/users/me", token)).status_code == (401 if deactivated else 200)


async def test_erasing_one_user_at_once_queues_one_job(api: ApiClient, deps: Deps, unique: str) -> None:
    server = await server_key(deps)
    path = f"/server/users/gone-{unique}"
    await api.put(path, server, json={})
    results = await burst(api.delete(path, server) for _ in range(N))
    assert tally(results) == {202: N}
    assert len({r.json["job_id"] for r in results}) == 1


async def test_the_same_server_conversation_at_once_is_one_with_its_members_once(
    api: ApiClient, deps: Deps, unique: str, run_worker: RunWorker
) -> None:
    server = await server_key(deps)
    members = [f"m{i}-{unique}" for i in range(3)]
    for member in members:
        await api.put(f"/server/users/{member}", server, json={})
    path = f"/server/conversations/room-{unique}"
    put = {"title": "room", "member_ids": members[:2]}
    results = await burst(api.put(path, server, json=put) for _ in range(N))
    assert tally(results) == {201: 1, 200: N - 1}
    cid = results[0].json["id"]
    more = {"member_ids": [members[2]]}
    added = await burst(api.post(f"{path}/members", server, json=more) for _ in range(N))
    assert tally(added) == {200: N}
    count = select(func.count()).where(Participant.conversation_id == uuid.UUID(cid))
    assert await scalar(deps, count) == 3
    removed = await burst(api.delete(f"{path}/members/{members[0]}", server) for _ in range(N))
    assert tally(removed)[204] >= 1 and set(tally(removed)) <= {204, 404}
    assert await scalar(deps, count) == 2
    sent = await burst(
        api.post(f"{path}/messages", server, json={"body": "once", "client_id": "sys-1"}) for _ in range(N)
    )
    assert tally(sent) == {202: N} and len({(r.json["id"], r.json["seq"]) for r in sent}) == 1
    await run_worker()
    stored = select(func.count()).where(Message.conversation_id == uuid.UUID(cid))
    assert await scalar(deps, stored) == 1


COVERED = {
    ("POST", "/api/v1/auth/register"): test_registering_one_username_at_once_makes_one_user,
    ("POST", "/api/v1/auth/login"): test_logging_in_at_once_gives_each_a_login_of_its_own,
    ("POST", "/api/v1/auth/refresh"): test_one_refresh_token_used_at_once_rotates_once_and_ends_that_login,
    ("POST", "/api/v1/auth/logout"): test_logging_out_at_once_ends_the_login_once,
    ("PATCH", "/api/v1/users/me"): test_patching_me_at_once_answers_each_with_its_own_write,
    ("POST", "/api/v1/conversations"): test_both_sides_opening_their_direct_conversation_at_once_make_one,
    ("POST", "/api/v1/conversations/{conversation_id}/participants"): (
        test_adding_the_same_and_different_participants_at_once
    ),
    ("DELETE", "/api/v1/conversations/{conversation_id}/participants/{user_id}"): (
        test_removing_and_leaving_at_once_removes_once
    ),
    ("POST", "/api/v1/conversations/{conversation_id}/read"): test_read_markers_at_once_end_at_the_highest,
    ("PUT", "/api/v1/users/me/blocks/{user_id}"): test_the_same_block_at_once_is_one_block,
    ("DELETE", "/api/v1/users/me/blocks/{user_id}"): test_blocks_and_unblocks_at_once_end_as_one_of_them,
    ("PATCH", "/api/v1/conversations/{conversation_id}/settings"): (
        test_settings_at_once_end_as_one_of_them_and_stay_the_callers_own
    ),
    ("POST", "/api/v1/conversations/{conversation_id}/typing"): test_typing_at_once_is_one_notification,
    (
        "POST",
        "/api/v1/conversations/{conversation_id}/messages",
    ): test_one_client_id_sent_at_once_is_one_message,
    ("PATCH", "/api/v1/messages/{message_id}"): test_edits_at_once_apply_in_the_order_they_were_accepted,
    ("DELETE", "/api/v1/messages/{message_id}"): test_edits_and_deletes_at_once_end_deleted,
    ("PUT", "/api/v1/messages/{message_id}/reactions/{emoji}"): (
        test_the_same_reaction_at_once_is_stored_and_announced_once
    ),
    ("DELETE", "/api/v1/messages/{message_id}/reactions/{emoji}"): (
        test_adds_and_removes_at_once_end_as_the_last_accepted
    ),
    ("POST", "/api/v1/uploads"): test_uploads_at_once_are_each_their_own,
    (
        "PUT",
        "/api/v1/uploads/{upload_id}/content",
    ): test_one_upload_put_at_once_is_stored_once_and_taken_by_one_send,
    ("PUT", "/api/v1/server/users/{external_id}"): test_the_same_server_user_put_at_once_is_one_user,
    ("POST", "/api/v1/server/tokens"): test_tokens_for_a_new_user_at_once_make_one_user,
    ("POST", "/api/v1/server/users/{external_id}/deactivate"): (
        test_deactivating_and_reactivating_at_once_end_as_one_of_them
    ),
    ("POST", "/api/v1/server/users/{external_id}/reactivate"): (
        test_deactivating_and_reactivating_at_once_end_as_one_of_them
    ),
    ("DELETE", "/api/v1/server/users/{external_id}"): test_erasing_one_user_at_once_queues_one_job,
    ("PUT", "/api/v1/server/conversations/{external_id}"): (
        test_the_same_server_conversation_at_once_is_one_with_its_members_once
    ),
    ("POST", "/api/v1/server/conversations/{external_id}/members"): (
        test_the_same_server_conversation_at_once_is_one_with_its_members_once
    ),
    ("DELETE", "/api/v1/server/conversations/{external_id}/members/{member_external_id}"): (
        test_the_same_server_conversation_at_once_is_one_with_its_members_once
    ),
    ("POST", "/api/v1/server/conversations/{external_id}/messages"): (
        test_the_same_server_conversation_at_once_is_one_with_its_members_once
    ),
    ("POST", "/api/v1/admin/dead-letters/{job_id}/retry"): (
        test_retrying_and_discarding_one_dead_letter_at_once_does_one
    ),
    (
        "DELETE",
        "/api/v1/admin/dead-letters/{job_id}",
    ): test_retrying_and_discarding_one_dead_letter_at_once_does_one,
    ("POST", "/api/v1/admin/webhooks"): (
        test_registering_at_once_makes_one_webhook_each_and_deleting_one_at_once_deletes_it_once
    ),
    ("DELETE", "/api/v1/admin/webhooks/{webhook_id}"): (
        test_registering_at_once_makes_one_webhook_each_and_deleting_one_at_once_deletes_it_once
    ),
}


def test_every_write_route_has_a_burst(api: ApiClient) -> None:
    writes = set()
    for route in inspect.inspect_routes(api.conductor.app):
        for method in route.methods:
            if not method.internal and method.method not in ("GET", "HEAD", "OPTIONS"):
                writes.add((method.method, route.path))
    missing = sorted(f"{m} {p}" for m, p in writes - COVERED.keys())
    stale = sorted(f"{m} {p}" for m, p in COVERED.keys() - writes)
    assert not missing, f"write routes no test here fires a burst at (add one to COVERED): {missing}"
    assert not stale, f"COVERED names routes the app no longer has: {stale}"
