"""Forged list cursors: whatever a client hands back that this api did not issue is a 422 naming
`query.cursor`, never a 500 (a datetime that overflows UTC, NaN ranks, bytes that are not UTF-8)."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest

from tests.support import ApiClient, assert_problem

UUID = "00000000-0000-4000-8000-000000000000"
ARABIC_ZERO = "\u0660"  # int() and uuid.UUID() take it as a digit


def b64(raw: bytes | str) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# Cursors that fail on every route, whatever its number of fields.
COMMON = [
    "!!!",
    "a",
    "====",
    b64(b"\xff\xfe\x00|\x80"),
    b64("|"),
    b64("||"),
    b64("|||"),
    b64("a|b|c|d|e"),
    b64("\x00"),
]

TIME_CURSORS = [
    *COMMON,
    b64(f"0001-01-01T00:00:00+14:00|{UUID}"),  # overflows on the way to UTC
    b64(f"9999-12-31T23:59:59-14:00|{UUID}"),
    b64(f"0001-01-01T00:00:00+23:59|{UUID}"),
    b64(f"2024-01-01T00:00:00|{UUID}"),  # naive
    b64("2024-01-01T00:00:00+00:00|not-a-uuid"),
    b64(f"2024-01-01T00:00:00+00:00|{UUID}|extra"),
    b64("2024-01-01T00:00:00+00:00"),
    b64(f"nonsense|{UUID}"),
    b64(f"\uff12\uff10\uff12\uff14-01-01T00:00:00+00:00|{UUID}"),  # fullwidth digits
    b64(f"2024-01-01T00:00:00+00:00|{UUID.replace('0', ARABIC_ZERO)}"),
    b64(f"2024-01-01T00:00:00+00:00|{{{UUID}}}x"),
]

SEARCH_CURSORS = [
    *COMMON,
    b64(f"0.5|0001-01-01T00:00:00+14:00|{UUID}"),
    b64(f"0.5|9999-12-31T23:59:59-14:00|{UUID}"),
    b64(f"nan|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"NaN|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"inf|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"-inf|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"1e999|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"{'9' * 400}|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"1e300|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"-1|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"{ARABIC_ZERO}.\u0665|2024-01-01T00:00:00+00:00|{UUID}"),
    b64(f"0.5|2024-01-01T00:00:00|{UUID}"),
    b64("0.5|2024-01-01T00:00:00+00:00|not-a-uuid"),
    b64(f"0.5|2024-01-01T00:00:00+00:00|{UUID}|x"),
    b64("0.5|2024-01-01T00:00:00+00:00"),
    b64(f"x|2024-01-01T00:00:00+00:00|{UUID}"),
]


async def _assert_cursor_refused(api: ApiClient, path: str, cursor: str) -> None:
    user = await api.user()
    sep = "&" if "?" in path else "?"
    result = await api.get(f"{path}{sep}cursor={quote(cursor, safe='')}", user)
    body = assert_problem(result, 422)
    assert [e["field"] for e in body["errors"]] == ["query.cursor"], body


@pytest.mark.parametrize("cursor", TIME_CURSORS)
async def test_forged_conversation_cursors_are_422(api: ApiClient, cursor: str) -> None:
    await _assert_cursor_refused(api, "/conversations", cursor)


@pytest.mark.parametrize("cursor", TIME_CURSORS)
async def test_forged_block_cursors_are_422(api: ApiClient, cursor: str) -> None:
    await _assert_cursor_refused(api, "/users/me/blocks", cursor)


@pytest.mark.parametrize("cursor", SEARCH_CURSORS)
async def test_forged_search_cursors_are_422(api: ApiClient, cursor: str) -> None:
    await _assert_cursor_refused(api, "/search/messages?q=hello", cursor)


async def test_issued_cursors_still_page(api: ApiClient) -> None:
    """The strict reading still takes back what the api wrote."""
    alice = await api.user()
    for _ in range(3):
        await api.conversation(alice, await api.user())
    first = await api.get("/conversations?limit=2", alice)
    assert first.status_code == 200, first.text
    cursor = first.json["next_cursor"]
    assert cursor
    second = await api.get(f"/conversations?limit=2&cursor={cursor}", alice)
    assert second.status_code == 200, second.text
    assert len(second.json["items"]) == 1
