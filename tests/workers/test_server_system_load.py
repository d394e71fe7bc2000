"""1,000 system messages into one conversation through `POST /server/conversations/.../messages`,
stored by a real worker once each and delivered once each, in seq order; and a system message's
webhook delivery."""

from __future__ import annotations

import asyncio

import pytest

from api.deps import Deps
from chat.cli import set_admin
from chat.realtime.events import MessageCreated
from tests.support import ApiClient
from tests.support.messages import stored_count, stream
from tests.support.serverapi import app_user, server_key
from tests.support.settings import RunWorker
from tests.support.webhooks import Receiver, receiving

COUNT = 1000

# A load test (a thousand messages through the real worker): the e2e tier runs it, to keep make
# test under two minutes.
pytestmark = pytest.mark.e2e


async def test_a_thousand_system_messages_are_stored_and_delivered_once_each_in_order(
    api: ApiClient, deps: Deps, run_worker: RunWorker, unique: str
) -> None:
    server = await server_key(deps)
    ann = await app_user(api, deps, f"ann-{unique}")
    path = f"/server/conversations/load-{unique}"
    cid = (await api.put(path, server, json={"title": "load", "member_ids": [f"ann-{unique}"]})).json["id"]

    async def post(i: int) -> int:
        result = await api.post(f"{path}/messages", server, json={"body": f"tick {i}", "client_id": f"t{i}"})
        assert result.status_code == 202, result.text
        seq: int = result.json["seq"]
        return seq

    seqs: list[int] = []
    for start in range(0, COUNT, 100):
        seqs += await asyncio.gather(*(post(i) for i in range(start, start + 100)))
    assert sorted(seqs) == list(range(1, COUNT + 1))
    await run_worker()

    assert await stored_count(deps, conversation_id=cid, kind="system") == COUNT
    created = [e for e in await stream(deps.redis, ann.id) if isinstance(e, MessageCreated)]
    # Once each; the worker stores many at once, so events may interleave: clients order by seq.
    assert sorted(e.data.seq for e in created) == list(range(1, COUNT + 1))
    history = await api.get(f"/conversations/{cid}/messages", ann, query_string="after=0&limit=200")
    assert [m["seq"] for m in history.json["items"]] == list(range(1, 201))
    assert {(e.data.kind, e.data.sender_id) for e in created} == {("system", None)}
    by_seq = {s: f"tick {i}" for i, s in enumerate(seqs)}
    assert all(e.data.body == by_seq[e.data.seq] for e in created)


async def test_a_system_message_webhook_has_no_sender_and_every_member_offline(
    api: ApiClient, deps: Deps, run_worker: RunWorker, unique: str
) -> None:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    server = await server_key(deps)
    ann, ben = [await app_user(api, deps, f"{n}-{unique}") for n in ("ann", "ben")]
    path = f"/server/conversations/hook-{unique}"
    members = [f"ann-{unique}", f"ben-{unique}"]
    cid = (await api.put(path, server, json={"title": "t", "member_ids": members})).json["id"]
    async with receiving(Receiver()) as receiver:
        hook = {"url": receiver.url, "events": ["message.created"]}
        assert (await api.post("/admin/webhooks", admin, json=hook)).status_code == 201
        sent = await api.post(f"{path}/messages", server, json={"body": "welcome", "client_id": "w"})
        assert sent.status_code == 202, sent.text
        await run_worker()
    [delivery] = receiver.accepted
    data = delivery.json["data"]
    assert delivery.json["type"] == "message.created"
    assert (data["id"], data["conversation_id"], data["kind"], data["sender_id"]) == (
        sent.json["id"],
        cid,
        "system",
        None,
    )
    assert sorted(data["offline_recipient_ids"]) == sorted([ann.id, ben.id])
