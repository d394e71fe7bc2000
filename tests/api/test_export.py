"""Export (`chat.usecases.export.export_user`): a user's profile, conversations, blocks and their
messages as readers see them, paged over the messages; a forged cursor is a 422 on query.cursor."""

from __future__ import annotations

import uuid

import pytest

from api.deps import Deps
from chat.errors import Unprocessable
from chat.usecases.export import export_user
from tests.support import ApiClient
from tests.support.messages import send
from tests.support.settings import RunWorker


async def test_export_gives_everything_and_pages_over_messages(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    group = await api.conversation(alice, bob)
    sent = [await send(api, alice, cid, f"note {i}") for i in range(3)]
    await send(api, bob, cid, "not alice's")
    await run_worker()
    assert (await api.put(f"/messages/{sent[0]['id']}/reactions/%F0%9F%91%8D", bob)).status_code == 204
    assert (await api.put(f"/users/me/blocks/{bob.id}", alice)).status_code < 300
    await run_worker()

    me = uuid.UUID(alice.id)
    first = await export_user(deps.sessions, me, None, 2, storage=deps.storage)
    assert first["user"]["id"] == alice.id and first["user"]["username"] == alice.username
    assert {"external_id", "metadata", "display_name"} <= set(first["user"])
    assert {c["id"] for c in first["conversations"]} == {cid, group["id"]}
    assert [b["user_id"] for b in first["blocks"]] == [bob.id]
    assert [m["body"] for m in first["messages"]] == ["note 0", "note 1"]
    assert first["messages"][0]["reactions"] == [{"emoji": "👍", "count": 1, "me": False}]
    assert first["next_cursor"]

    second = await export_user(deps.sessions, me, first["next_cursor"], 2)
    assert [m["body"] for m in second["messages"]] == ["note 2"]
    assert second["next_cursor"] is None

    for forged in ("nope", first["next_cursor"][:-2], "A" * 2000):
        with pytest.raises(Unprocessable) as raised:
            await export_user(deps.sessions, me, forged, 2)
        assert raised.value.extra["errors"][0]["field"] == "query.cursor"
