"""What clients rely on in every response: charset, problem titles, CORS, and no silent params."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chat.settings import Settings
from tests.support import ApiClient, assert_problem
from tests.support.apps import api_with


async def test_json_says_its_charset(api: ApiClient) -> None:
    alice = await api.user()
    me = await api.get("/users/me", alice)
    assert me.headers["content-type"] == "application/json; charset=utf-8"
    missing = await api.get("/users/me")
    assert missing.headers["content-type"] == "application/problem+json; charset=utf-8"


async def test_problem_titles_are_the_reason_phrase_wherever_they_come_from(api: ApiClient) -> None:
    alice = await api.user()
    routing = assert_problem(await api.get("/no/such/route", alice), 404)
    resource = assert_problem(
        await api.get("/conversations/00000000-0000-0000-0000-000000000000", alice), 404
    )
    assert routing["title"] == resource["title"] == "Not Found"
    method = assert_problem(await api.request("PUT", "/users/me", alice), 405)
    assert method["title"] == "Method Not Allowed"


async def test_history_refuses_a_cursor_instead_of_ignoring_it(api: ApiClient) -> None:
    alice, _, cid = await api.pair()
    problem = assert_problem(
        await api.get(f"/conversations/{cid}/messages", alice, query_string="cursor=abc"), 422
    )
    assert problem["errors"][0]["field"] == "query.cursor"


@pytest.fixture
async def cors(settings: Settings) -> AsyncIterator[ApiClient]:
    async with api_with(settings, cors_allowed_origins="https://app.example.com") as allowed:
        yield allowed


async def test_cors_for_the_configured_origins_only(cors: ApiClient, api: ApiClient) -> None:
    preflight = await cors.request(
        "OPTIONS",
        "/conversations",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    alice = await cors.user()
    me = await cors.get("/users/me", alice, headers={"Origin": "https://app.example.com"})
    assert me.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "Location" in me.headers["access-control-expose-headers"]
    other = await cors.get("/users/me", alice, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # None by default.
    plain = await api.get("/healthz", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in plain.headers
