"""Input that looks like something and is not: reactions named like path segments (`..` turns a
client's `DELETE /messages/{id}/reactions/..` into `DELETE /messages/{id}`) and message bodies
made only of invisible characters."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from api.fields import is_blank
from chat.domain import reactions
from tests.support import ApiClient, assert_problem
from tests.support.messages import send
from tests.support.settings import RunWorker

PATH_LIKE = [".", "..", "...", "....", "a/b", "a\\b", "a?b", "a#b", "100%", "%2e%2e", "x\x7f", "\x1b[0m"]


@pytest.mark.parametrize("emoji", PATH_LIKE)
def test_path_like_emoji_are_invalid(emoji: str) -> None:
    assert reactions.valid_emoji(emoji) is False


@pytest.mark.parametrize("emoji", ["\N{THUMBS UP SIGN}", "a.b", "+1", ".\N{THUMBS UP SIGN}", ":tada:"])
def test_emoji_with_a_dot_among_other_characters_stay_valid(emoji: str) -> None:
    assert reactions.valid_emoji(emoji) is True


async def test_path_like_reactions_are_422_path_emoji(api: ApiClient, run_worker: RunWorker) -> None:
    alice, bob, cid = await api.pair()
    sent = await send(api, alice, cid, "react to me")
    await run_worker()
    # Sent percent-encoded (as a careful client would), so they reach the resource as themselves.
    for emoji in PATH_LIKE:
        for method in ("PUT", "DELETE"):
            url = f"/messages/{sent['id']}/reactions/{quote(emoji, safe='')}"
            result = await api.request(method, url, bob)
            if result.status_code == 404:
                continue  # Falcon routes a decoded `/` elsewhere: no reaction either way
            problem = assert_problem(result, 422)
            assert [e["field"] for e in problem["errors"]] == ["path.emoji"], emoji
    await run_worker()
    message = (await api.get(f"/messages/{sent['id']}", bob)).json
    assert message["reactions"] == [] and message["deleted"] is False


INVISIBLE = [
    "\u200b",  # ZERO WIDTH SPACE
    "\u200c\u200d",  # ZWNJ, ZWJ
    "\u2060",  # WORD JOINER
    "\ufeff",  # ZERO WIDTH NO-BREAK SPACE (BOM)
    "\u00ad",  # SOFT HYPHEN
    "\u200e\u200f\u202e",  # direction marks and overrides (Cf)
    "\u2061\u2062\u2063\u2064",  # invisible operators (Cf)
    "\U000e0041\U000e0001",  # tag characters (Cf)
    " \u200b\t\n\u3000\u00a0\u2028",  # mixed with whitespace
    "\u3164\u115f\u034f\ufe0f",  # Hangul fillers, combining grapheme joiner, variation selector
]


@pytest.mark.parametrize("body", INVISIBLE)
def test_invisible_only_text_is_blank(body: str) -> None:
    assert is_blank(body)


@pytest.mark.parametrize("body", ["a", "\u200bhi\u200b", "\N{THUMBS UP SIGN}", "\u00ad-", "\u0627\u200c"])
def test_text_with_something_visible_is_not_blank(body: str) -> None:
    assert not is_blank(body)


async def test_invisible_bodies_are_422_on_send_and_edit(api: ApiClient, run_worker: RunWorker) -> None:
    alice, _, cid = await api.pair()
    sent = await send(api, alice, cid, "visible")
    await run_worker()
    for body in INVISIBLE:
        result = await api.post(f"/conversations/{cid}/messages", alice, json={"body": body})
        problem = assert_problem(result, 422)
        assert [e["field"] for e in problem["errors"]] == ["body.body"], repr(body)
        edit = await api.patch(f"/messages/{sent['id']}", alice, json={"body": body})
        problem = assert_problem(edit, 422)
        assert [e["field"] for e in problem["errors"]] == ["body.body"], repr(body)
    ok = await api.post(f"/conversations/{cid}/messages", alice, json={"body": "\u200bhi"})
    assert ok.status_code == 202, ok.text
