"""Reactions: PUT and DELETE an emoji on a message, counts and `me` on every read, the events."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest

from api.deps import Deps
from chat.domain import reactions
from chat.jobqueue.jobs import React
from chat.realtime.events import MessageDeleted, MessageUpdated, ReactionAdded, ReactionRemoved
from tests.support import ApiClient, assert_problem
from tests.support.messages import send, stream
from tests.support.settings import RunWorker
from tests.support.sqlite import sqlite_world
from workers import store

THUMBS = "\N{THUMBS UP SIGN}"
PARTY = "\N{PARTY POPPER}"


def path(message_id: str, emoji: str) -> str:
    return f"/messages/{message_id}/reactions/{quote(emoji)}"


async def test_reactions_are_counted_per_emoji_with_me_and_announced(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    sent = await send(api, alice, cid, "react to me")
    await run_worker()
    for user, emoji in ((bob, THUMBS), (alice, PARTY), (alice, THUMBS)):
        assert (await api.put(path(sent["id"], emoji), user)).status_code == 204
        await run_worker()  # one at a time: the order they first appeared in is the order shown
    as_bob = (await api.get(f"/messages/{sent['id']}", bob)).json["reactions"]
    assert as_bob == [
        {"emoji": THUMBS, "count": 2, "me": True},
        {"emoji": PARTY, "count": 1, "me": False},
    ]
    history = (await api.get(f"/conversations/{cid}/messages", alice)).json["items"]
    assert history[0]["reactions"] == [
        {"emoji": THUMBS, "count": 2, "me": True},
        {"emoji": PARTY, "count": 1, "me": True},
    ]

    # Taking one back, twice: one removal, one event; the count follows.
    for _ in range(2):
        assert (await api.delete(path(sent["id"], THUMBS), bob)).status_code == 204
    await run_worker()
    as_bob = (await api.get(f"/messages/{sent['id']}", bob)).json["reactions"]
    # Shown in the order the reactions still standing first appeared: alice's thumbs came last.
    assert as_bob == [{"emoji": PARTY, "count": 1, "me": False}, {"emoji": THUMBS, "count": 1, "me": False}]

    for user in (alice, bob):
        events = [
            e for e in await stream(deps.redis, user.id) if isinstance(e, ReactionAdded | ReactionRemoved)
        ]
        assert [(e.type, e.data.emoji, str(e.data.user_id)) for e in events] == [
            ("reaction.added", THUMBS, bob.id),
            ("reaction.added", PARTY, alice.id),
            ("reaction.added", THUMBS, alice.id),
            ("reaction.removed", THUMBS, bob.id),
        ]
        assert all(str(e.data.message_id) == sent["id"] and str(e.conversation_id) == cid for e in events)

    # An edit's event carries the reactions as stored, for everyone alike (`me` false).
    assert (await api.patch(f"/messages/{sent['id']}", alice, json={"body": "edited"})).status_code == 202
    await run_worker()
    [updated] = [e for e in await stream(deps.redis, bob.id) if isinstance(e, MessageUpdated)]
    assert [(r.emoji, r.count, r.me) for r in updated.data.reactions] == [
        (PARTY, 1, False),
        (THUMBS, 1, False),
    ]


async def test_reaction_calls_check_the_caller_the_emoji_and_the_message(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    eve = await api.user()
    sent = await send(api, alice, cid, "hello")
    await run_worker()
    # Not a participant: the message does not exist for them, whatever the emoji.
    assert_problem(await api.put(path(sent["id"], THUMBS), eve), 404)
    assert_problem(await api.delete(path(sent["id"], "has space"), eve), 404)
    for bad in ("has space", "x" * 33, "tab\there"):
        problem = assert_problem(await api.put(path(sent["id"], bad), bob), 422)
        assert [e["field"] for e in problem["errors"]] == ["path.emoji"]
    assert (await api.put(path(sent["id"], "x" * 32), bob)).status_code == 204
    assert_problem(await api.put(path("not-a-uuid", THUMBS), bob), 404)
    # A deleted message takes no new reactions; taking one back stays possible.
    assert (await api.delete(f"/messages/{sent['id']}", alice)).status_code == 202
    await run_worker()
    assert_problem(await api.put(path(sent["id"], THUMBS), bob), 409)
    assert (await api.delete(path(sent["id"], "x" * 32), bob)).status_code == 204
    await run_worker()
    assert (await api.get(f"/messages/{sent['id']}", bob)).json["reactions"] == []


async def test_reactions_on_sqlite_apply_in_order_like_on_postgres() -> None:
    """The dev mode's database: the same store and the same reads."""
    async with sqlite_world() as world:

        def change(present: bool, seconds: int) -> React:
            return React(
                message_id=world.message,
                conversation_id=world.conversation,
                user_id=world.user,
                emoji=THUMBS,
                present=present,
                changed_at=world.now + timedelta(seconds=seconds),
            )

        # Accepted as: add (1 s), remove (2 s), add (3 s); they reach the worker out of order.
        outcomes = []
        for job in (change(True, 1), change(True, 3), change(False, 2), change(True, 3)):
            async with world.sessions() as session:
                outcomes.append(await store.react(session, job))
                await session.commit()
        assert outcomes == [True, False, False, False]
        async with world.sessions() as session:
            found = await reactions.counts(session, [world.message], world.user)
        assert [(r.emoji, r.count, r.me) for r in found[world.message]] == [(THUMBS, 1, True)]


@pytest.mark.parametrize(
    ("emoji", "valid"),
    [
        ("\N{WOMAN}\u200d\N{PERSONAL COMPUTER}", True),  # joined with ZERO WIDTH JOINER
        ("\N{MAN}\u200d\N{WOMAN}\u200d\N{GIRL}\u200d\N{BOY}", True),
        ("\N{WAVING WHITE FLAG}\ufe0f\u200d\N{RAINBOW}", True),
        # England's flag: a black flag and tag characters.
        ("\N{WAVING BLACK FLAG}\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", True),
        ("\N{REGIONAL INDICATOR SYMBOL LETTER F}\N{REGIONAL INDICATOR SYMBOL LETTER R}", True),
        ("\N{THUMBS UP SIGN}\N{EMOJI MODIFIER FITZPATRICK TYPE-4}", True),
        ("a\u200bb", False),  # ZERO WIDTH SPACE
        ("\u202eab", False),  # RIGHT-TO-LEFT OVERRIDE
        ("a\u00a0b", False),  # NO-BREAK SPACE
        ("\ufffd", False),  # what a path of invalid UTF-8 decodes to
        ("\u200d", False),  # a joiner joins something
        ("", False),
    ],
)
def test_an_emoji_may_be_any_visible_sequence_without_whitespace(emoji: str, valid: bool) -> None:
    assert reactions.valid_emoji(emoji) is valid


async def test_a_deleted_message_shows_no_reactions_or_mentions(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    sent = await send(api, alice, cid, f"hey @{bob.username}")
    await run_worker()
    assert (await api.put(path(sent["id"], THUMBS), bob)).status_code == 204
    await run_worker()
    shown = (await api.get(f"/messages/{sent['id']}", bob)).json
    assert shown["mentions"] == [bob.id] and shown["reactions"] == [{"emoji": THUMBS, "count": 1, "me": True}]

    assert (await api.delete(f"/messages/{sent['id']}", alice)).status_code == 202
    await run_worker()
    shown = (await api.get(f"/messages/{sent['id']}", bob)).json
    assert (shown["deleted"], shown["body"], shown["mentions"], shown["reactions"]) == (True, None, [], [])
    [deleted] = [e for e in await stream(deps.redis, bob.id) if isinstance(e, MessageDeleted)]
    assert (deleted.data.mentions, deleted.data.reactions) == ([], [])
    # A send may say `attachments: null` for none, as it may for reply_to.
    none = await api.post(f"/conversations/{cid}/messages", alice, json={"body": "x", "attachments": None})
    assert none.status_code == 202, none.text
