"""A token from `POST /server/tokens` opens the socket as it opens the api: the same user, and
closed 4403 once the app's backend deactivates them, 4401 once it has expired."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from falcon.testing import ASGIConductor

from api.deps import Deps
from chat.identity.security import Tokens
from chat.settings import Settings
from push.app import create_app
from tests.support import ApiClient, TestUser
from tests.support.handshake import first_frame_or_close
from tests.support.serverapi import server_key


@pytest.fixture
async def push(settings: Settings) -> AsyncIterator[ASGIConductor]:
    async with ASGIConductor(create_app(settings)) as conductor:
        yield conductor


async def minted(api: ApiClient, server: TestUser, external_id: str, **body: object) -> str:
    answer = await api.post("/server/tokens", server, json={"external_id": external_id, **body})
    assert answer.status_code == 200, answer.text
    token: str = answer.json["access_token"]
    return token


async def test_a_minted_token_opens_the_socket_until_the_user_is_deactivated(
    api: ApiClient, deps: Deps, push: ASGIConductor, unique: str
) -> None:
    server = await server_key(deps)
    token = await minted(api, server, f"sock-{unique}", display_name="Sock")
    me = await api.get("/users/me", TestUser("", "", token, ""))
    assert me.status_code == 200, me.text

    frame, code = await first_frame_or_close(push, token)
    assert code is None and frame is not None
    assert frame["type"] == "ready" and frame["user_id"] == me.json["id"]

    deactivated = await api.post(f"/server/users/sock-{unique}/deactivate", server)
    assert deactivated.status_code == 204, deactivated.text
    assert await first_frame_or_close(push, token) == (None, 4403)


async def test_a_minted_token_past_its_ttl_is_closed_4401(
    api: ApiClient, deps: Deps, push: ASGIConductor, unique: str
) -> None:
    server = await server_key(deps)
    token = await minted(api, server, f"ttl-{unique}", ttl_seconds=60)
    issued = jwt.decode(token, options={"verify_signature": False})
    assert issued["exp"] - issued["iat"] == 60
    # The same token, had it been minted a minute and a second ago.
    stale = Tokens(deps.settings).issue_access(
        uuid.UUID(issued["sub"]), now=datetime.now(UTC) - timedelta(seconds=61), ttl=timedelta(seconds=60)
    )
    assert await first_frame_or_close(push, stale) == (None, 4401)


async def test_a_server_key_opens_no_socket(deps: Deps, push: ASGIConductor) -> None:
    """A server key is the app's backend's, never a user's: 4401 at the handshake, as on REST."""
    server = await server_key(deps)
    assert await first_frame_or_close(push, server.access_token) == (None, 4401)
