"""Search: `GET /search/messages`, full-text on Postgres, only from the caller's conversations."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import text

from api.deps import Deps
from chat.domain import search
from chat.models import Message, Participant
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.messages import send
from tests.support.settings import RunWorker
from tests.support.sqlite import sqlite_world


async def found(api: ApiClient, user: TestUser, q: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of the search, followed to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        query = {"q": q, **params, **({"cursor": cursor} if cursor else {})}
        result = await api.get(f"/search/messages?{urlencode(query)}", user)
        assert result.status_code == 200, result.text
        items += result.json["items"]
        cursor = result.json["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never ended")


async def test_results_are_ranked_and_only_from_my_conversations(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, mine = await api.pair()
    carol, dave, theirs = await api.pair()
    once = await send(api, alice, mine, "pineapple on the side")
    thrice = await send(api, bob, mine, "Pineapple, pineapple and more PINEAPPLE")
    await send(api, alice, mine, "nothing to see here")
    await send(api, carol, theirs, "pineapple is mine alone")
    await run_worker()

    hits = await found(api, alice, "pineapple")
    # The body said it three times: it ranks first. Matching ignores case and punctuation.
    assert [h["id"] for h in hits] == [thrice["id"], once["id"]]
    assert {h["conversation_id"] for h in hits} == {mine}
    assert hits[1]["body"] == "pineapple on the side" and hits[1]["reactions"] == []
    assert [h["id"] for h in await found(api, carol, "pineapple")] != []
    assert all(h["conversation_id"] == theirs for h in await found(api, carol, "pineapple"))
    # Every word must match; quotes make a phrase, a minus leaves a word out.
    assert [h["id"] for h in await found(api, alice, "pineapple side")] == [once["id"]]
    assert [h["id"] for h in await found(api, alice, '"more pineapple"')] == [thrice["id"]]
    assert [h["id"] for h in await found(api, alice, "pineapple -side")] == [thrice["id"]]
    assert len(await found(api, alice, "side or nothing")) == 2
    assert await found(api, dave, "nothing") == []
    # One conversation: mine narrows; theirs is a 404 to me, exactly as for one that does not exist.
    assert len(await found(api, alice, "pineapple", conversation_id=mine)) == 2
    assert await found(api, alice, "nothing", conversation_id=mine) != []
    for other in (theirs, "00000000-0000-4000-8000-000000000000"):
        assert_problem(await api.get(f"/search/messages?q=pineapple&conversation_id={other}", alice), 404)
    # Nothing to look for once punctuation is gone: no results, not an error.
    assert await found(api, alice, "!!! ???") == []


async def test_pages_follow_the_ranking_without_repeats_or_gaps(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    sent = [
        await send(api, alice if i % 2 else bob, cid, "rocket " * (1 + i % 3) + f"n{i}") for i in range(7)
    ]
    await run_worker()
    whole = await found(api, alice, "rocket")
    paged = await found(api, alice, "rocket", limit=2)
    assert [h["id"] for h in paged] == [h["id"] for h in whole]
    assert sorted(h["id"] for h in whole) == sorted(s["id"] for s in sent)
    first = await api.get("/search/messages?q=rocket&limit=3", alice)
    assert len(first.json["items"]) == 3 and first.json["next_cursor"]
    # A message sent after the first page lands in the ranking; the pages already read stay put.
    await send(api, bob, cid, "rocket rocket rocket rocket fresh")
    await run_worker()
    rest = await found(api, alice, "rocket", limit=3, cursor=first.json["next_cursor"])
    assert [h["id"] for h in first.json["items"] + rest] == [h["id"] for h in whole]


async def test_edits_deletes_leaving_and_blocks_change_what_is_found(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, direct = await api.pair()
    carol = await api.user()
    group = (await api.conversation(alice, bob, carol))["id"]
    edited = await send(api, alice, direct, "meet at the harbour")
    deleted = await send(api, alice, direct, "the harbour code is 1234")
    from_bob = await send(api, bob, group, "harbour at noon?")
    from_carol = await send(api, carol, group, "harbour works for me")
    await run_worker()
    assert (
        await api.patch(f"/messages/{edited['id']}", alice, json={"body": "meet at the station"})
    ).status_code == 202
    assert (await api.delete(f"/messages/{deleted['id']}", alice)).status_code == 202
    await run_worker()

    assert {h["id"] for h in await found(api, alice, "harbour")} == {from_bob["id"], from_carol["id"]}
    [station] = await found(api, alice, "station")
    assert station["id"] == edited["id"] and station["edited_at"]

    # Someone I blocked never appears in my results, in any conversation; they still find mine.
    assert (await api.put(f"/users/me/blocks/{bob.id}", alice)).status_code == 204
    assert [h["id"] for h in await found(api, alice, "harbour")] == [from_carol["id"]]
    assert [h["id"] for h in await found(api, bob, "station")] == [edited["id"]]
    assert (await api.delete(f"/users/me/blocks/{bob.id}", alice)).status_code == 204
    assert len(await found(api, alice, "harbour")) == 2

    # A conversation I left is no longer searched.
    assert (await api.delete(f"/conversations/{group}/participants/{carol.id}", carol)).status_code == 204
    assert await found(api, carol, "harbour") == []


async def test_bad_queries_are_clear_errors(api: ApiClient) -> None:
    alice = await api.user()
    for query, field in (
        ("", "query.q"),
        ("q=", "query.q"),
        ("q=%20%20", "query.q"),
        ("q=" + "a" * 257, "query.q"),
        ("q=a%00b", "query.q"),
        ("q=a&cursor=nonsense", "query.cursor"),
        ("q=a&limit=0", "query.limit"),
        ("q=a&limit=1000", "query.limit"),
        ("q=a&conversation_id=nope", "query.conversation_id"),
    ):
        problem = assert_problem(await api.get(f"/search/messages?{query}", alice), 422)
        assert [p["field"] for p in problem["errors"]] == [field], query
    assert_problem(await api.get("/search/messages?q=a"), 401)


async def test_postgres_keeps_the_search_column_and_its_gin_index(deps: Deps) -> None:
    async with deps.engine.connect() as conn:
        generated = await conn.scalar(
            text(
                "SELECT is_generated FROM information_schema.columns"
                " WHERE table_name = 'messages' AND column_name = :c"
            ),
            {"c": search.VECTOR_COLUMN},
        )
        index = await conn.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :i"), {"i": search.VECTOR_INDEX}
        )
    assert generated == "ALWAYS"
    assert index is not None and "USING gin" in index


@pytest.mark.parametrize(
    ("q", "hits"),
    [
        ("FIRST", 1),  # any case
        ("irs", 1),  # a substring: the dev mode's simpler match
        ("first nope", 0),  # every word must match
        ("%", 0),  # LIKE's wildcards are only characters here
        ("_irst", 0),
    ],
)
async def test_sqlite_matches_every_word_as_a_substring(q: str, hits: int) -> None:
    async with sqlite_world() as world, world.sessions() as session:
        session.add(Participant(conversation_id=world.conversation, user_id=world.user))
        await session.flush()
        rows = (await session.execute(search.query("sqlite", world.user, q, 10, None))).all()
        assert len(rows) == hits
        if hits:
            message, rank = rows[0]
            assert isinstance(message, Message) and message.id == world.message and rank == 0.0
