"""A token whose user is gone is refused on every route (401), from the very next request on, while a
Postgres outage still leaves the token's signature enough (sends need only Redis)."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
from falcon.testing import Result
from sqlalchemy import delete

from api.deps import Deps
from chat.models import User
from chat.settings import Settings
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.apps import api_with


async def delete_user(deps: Deps, user: TestUser) -> None:
    async with deps.engine.begin() as conn:
        await conn.execute(delete(User).where(User.id == uuid.UUID(user.id)))


async def calls(api: ApiClient, user: TestUser, other: TestUser, group: str) -> dict[str, Result]:
    """One call of each kind the probe found answering for a deleted user."""
    upload = {"filename": "a.txt", "content_type": "text/plain", "size": 3}
    return {
        "POST /uploads": await api.post("/uploads", user, json=upload),
        "PUT /users/me/blocks/{id}": await api.put(f"/users/me/blocks/{other.id}", user),
        "GET /conversations": await api.get("/conversations", user),
        "GET /search/messages": await api.get("/search/messages?q=hello", user),
        "GET /users?q=": await api.get(f"/users?q={other.username[:3]}", user),
        "GET /users/{id}": await api.get(f"/users/{other.id}", user),
        "GET /users/me": await api.get("/users/me", user),
        "POST /conversations/{id}/messages": await api.post(
            f"/conversations/{group}/messages", user, json={"body": "hello"}
        ),
    }


async def test_every_route_refuses_a_deleted_users_token_at_once(api: ApiClient, deps: Deps) -> None:
    alice, bob = await api.user(), await api.user()
    group = (await api.conversation(bob, alice))["id"]  # bob's: a conversation's creator stays
    # Each works while alice exists (and the token is remembered as verified)...
    before = await calls(api, alice, bob, group)
    assert {k: r.status_code for k, r in before.items() if r.status_code >= 300} == {}
    await delete_user(deps, alice)
    # ...and none the moment her row is gone.
    after = await calls(api, alice, bob, group)
    assert {k: r.status_code for k, r in after.items()} == dict.fromkeys(after, 401)
    for result in after.values():
        problem = assert_problem(result, 401)
        assert "no longer exists" in problem["detail"]
        assert result.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert (await api.get("/users/me", bob)).status_code == 200


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_with_postgres_away_the_signature_alone_lets_a_send_through(
    api: ApiClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _bob, cid = await api.pair()
    gone = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/gone"
    with caplog.at_level(logging.WARNING):
        async with api_with(settings, database_url=gone) as outage:
            for i in range(5):
                sent = await outage.post(f"/conversations/{cid}/messages", alice, json={"body": f"m{i}"})
                assert sent.status_code == 202, sent.text
            # A route that needs Postgres for its own work says so, as before: 503, not 401.
            assert_problem(await outage.get("/conversations", alice), 503)
    # The outage is one warning for the user check, however many requests met it.
    warnings = [r for r in caplog.records if "user check" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()
