"""Numbers that arrive in a URL are read strictly: ASCII digits, a bounded count of them. `²` and
`٣` pass `str.isdigit()` (and `int()` takes `٣`), so a signed URL with such an `expires` was an
unauthenticated 500 with a traceback in the log; now it is a 403 like any URL this api did not sign,
and query numbers (`limit`, `before`) are 422s naming the parameter."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest

from chat.infra.numbers import parse_int
from tests.support import ApiClient, assert_problem

BAD_NUMBERS = ["\u00b2", "\u0663", "-1", "1e9", "9" * 400, "", " 5", "+5", "1_000", "0x10", "5\n"]


@pytest.mark.parametrize("text", BAD_NUMBERS)
def test_parse_int_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError):
        parse_int(text)


def test_parse_int_reads_what_it_should() -> None:
    assert parse_int("0") == 0
    assert parse_int("0042") == 42
    assert parse_int("9" * 18) == int("9" * 18)
    assert parse_int("-3", negative=True) == -3
    with pytest.raises(ValueError):
        parse_int("9" * 19)
    with pytest.raises(ValueError):
        parse_int("123", max_digits=2)
    with pytest.raises(ValueError):
        parse_int("-", negative=True)


def _with(url: str, **replace: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(replace)
    return parts.path + "?" + urlencode(query, quote_via=quote)


@pytest.mark.parametrize("expires", BAD_NUMBERS)
async def test_signed_urls_with_a_malformed_expiry_are_403(
    api: ApiClient, expires: str, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await api.user()
    body = {"filename": "a.bin", "content_type": "application/octet-stream", "size": 3}
    ticket = (await api.post("/uploads", alice, json=body)).json
    put_url = _with(ticket["upload_url"], expires=expires)
    path = urlsplit(put_url).path
    get_url = path + "?" + urlencode({"expires": expires, "filename": "a.bin", "signature": "0" * 64})
    with caplog.at_level(logging.WARNING):
        for method, url in (("PUT", put_url), ("GET", get_url)):
            path, query = url.split("?", 1)
            result = await api.conductor.simulate_request(
                method,
                path,
                query_string=query,
                body=b"abc" if method == "PUT" else None,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert_problem(result, 403)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "1e9", "9" * 400, "+5", " 5"])
async def test_query_numbers_are_422_naming_the_parameter(api: ApiClient, value: str) -> None:
    alice, _, cid = await api.pair()
    for path, name in (
        (f"/conversations?limit={quote(value)}", "limit"),
        (f"/conversations/{cid}/messages?before={quote(value)}", "before"),
    ):
        body = assert_problem(await api.get(path, alice), 422)
        assert [e["field"] for e in body["errors"]] == [f"query.{name}"]
