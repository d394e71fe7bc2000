"""The push handshake authenticates as the api does: the token, then the user it names."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from falcon.testing import ASGIConductor
from sqlalchemy import delete

from api.deps import Deps
from chat.models import User
from chat.settings import Settings
from push.app import create_app
from tests.support import ApiClient
from tests.support.handshake import first_frame_or_close
from tests.support.tokens import ODD_CLAIMS, signed_with


@pytest.fixture
async def push(settings: Settings) -> AsyncIterator[ASGIConductor]:
    """The push app (lifespan included) over the test's Postgres and Redis."""
    async with ASGIConductor(create_app(settings)) as conductor:
        yield conductor


async def test_a_live_users_token_gets_ready(api: ApiClient, push: ASGIConductor) -> None:
    alice = await api.user()
    frame, _ = await first_frame_or_close(push, alice.access_token)
    assert frame is not None and frame["type"] == "ready" and frame["user_id"] == alice.id


async def test_a_deleted_users_token_is_refused_4401(api: ApiClient, deps: Deps, push: ASGIConductor) -> None:
    alice = await api.user()
    async with deps.engine.begin() as conn:
        await conn.execute(delete(User).where(User.id == uuid.UUID(alice.id)))
    assert await first_frame_or_close(push, alice.access_token) == (None, 4401)


async def test_a_token_naming_no_user_is_refused_4401(deps: Deps, push: ASGIConductor) -> None:
    token = signed_with(deps.settings, "sub", str(uuid.uuid4()))
    assert await first_frame_or_close(push, token) == (None, 4401)


async def test_every_odd_claim_is_refused_4401(api: ApiClient, deps: Deps, push: ASGIConductor) -> None:
    alice = await api.user()
    closes = {}
    for claim, value in ODD_CLAIMS:
        token = signed_with(deps.settings, claim, value, user=uuid.UUID(alice.id))
        closes[f"{claim}={value!r:.30}"] = await first_frame_or_close(push, token)
    assert set(closes.values()) == {(None, 4401)}, closes
