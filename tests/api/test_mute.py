"""Muting a conversation: a participant's own setting; nothing counts as unread, events still arrive."""

from __future__ import annotations

from api.deps import Deps
from chat.realtime.events import MessageCreated
from tests.support import ApiClient, assert_problem
from tests.support.messages import send, stream
from tests.support.settings import RunWorker


async def test_a_muted_conversation_counts_nothing_unread_and_still_gets_events(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    eve = await api.user()
    settings = f"/conversations/{cid}/settings"
    answer = await api.patch(settings, bob, json={"muted": True})
    assert (answer.status_code, answer.json) == (200, {"muted": True})
    await send(api, alice, cid, f"@{bob.username} hello")
    await run_worker()

    view = (await api.get(f"/conversations/{cid}", bob)).json
    assert (view["muted"], view["unread_count"], view["unread_mentions"]) == (True, 0, 0)
    [listed] = [c for c in (await api.get("/conversations", bob)).json["items"] if c["id"] == cid]
    assert (listed["muted"], listed["unread_count"]) == (True, 0)
    assert [e.data.body for e in await stream(deps.redis, bob.id) if isinstance(e, MessageCreated)] == [
        f"@{bob.username} hello"
    ]
    # Alice's own view is hers: not muted, nothing unread of her own.
    assert (await api.get(f"/conversations/{cid}", alice)).json["muted"] is False

    # Unmuted, the counts come back as they are.
    assert (await api.patch(settings, bob, json={"muted": False})).json == {"muted": False}
    view = (await api.get(f"/conversations/{cid}", bob)).json
    assert (view["muted"], view["unread_count"], view["unread_mentions"]) == (False, 1, 1)

    for bad in ({}, {"muted": "yes"}, {"muted": None}):
        assert_problem(await api.patch(settings, bob, json=bad), 422)
    assert_problem(await api.patch(settings, eve, json={"muted": True}), 404)
