"""App tokens at the push handshake: the token the api accepts opens `/ws?token=`; a deactivated
user's is closed 4403, a bad one 4401, a new app user while Postgres is away 1013."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from falcon.testing import ASGIConductor
from sqlalchemy import func, update

from api.deps import Deps
from chat.models import User
from chat.settings import Settings
from push.app import create_app
from tests.support.appbackend import APP_SECRET, JwksServer, claims, ec_key, mint, mint_hs256, serving_jwks
from tests.support.apps import api_with
from tests.support.handshake import closed_port, first_frame_or_close
from tests.support.settings import make_settings


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    async with serving_jwks(ec_key()) as server:
        yield server


def app_settings(settings: Settings, jwks: JwksServer, **overrides: Any) -> Settings:
    return make_settings(
        **{
            "database_url": settings.database_url,
            "redis_url": settings.redis_url,
            "app_jwt_secret": APP_SECRET,
            "app_jwks_url": jwks.url,
            **overrides,
        }
    )


@pytest.fixture
async def push(settings: Settings, jwks: JwksServer) -> AsyncIterator[ASGIConductor]:
    async with ASGIConductor(create_app(app_settings(settings, jwks))) as conductor:
        yield conductor


async def test_the_same_app_token_works_on_the_api_and_on_push(
    settings: Settings, jwks: JwksServer, push: ASGIConductor
) -> None:
    token = mint(jwks.keys[0], claims(name="Grace"))
    async with api_with(settings, app_jwt_secret=APP_SECRET, app_jwks_url=jwks.url) as api:
        me = await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    frame, _ = await first_frame_or_close(push, token)
    assert frame is not None and frame["type"] == "ready" and frame["user_id"] == me.json["id"]


async def test_a_new_sub_first_seen_at_the_handshake_gets_its_user(push: ASGIConductor) -> None:
    frame, _ = await first_frame_or_close(push, mint_hs256(claims()))
    assert frame is not None and frame["type"] == "ready"


async def test_a_deactivated_app_user_is_closed_4403(deps: Deps, push: ASGIConductor) -> None:
    payload = claims()
    token = mint_hs256(payload)
    frame, _ = await first_frame_or_close(push, token)
    assert frame is not None and frame["type"] == "ready"
    async with deps.engine.begin() as conn:
        await conn.execute(
            update(User).where(User.external_id == payload["sub"]).values(deactivated_at=func.now())
        )
    assert await first_frame_or_close(push, token) == (None, 4403)


async def test_bad_app_tokens_are_closed_4401(jwks: JwksServer, push: ASGIConductor) -> None:
    for token in [
        mint_hs256(claims(ttl=86400 * 2)),
        mint(jwks.keys[0], claims(), kid="unknown"),
        mint_hs256(claims(sub="x" * 129)),
        mint_hs256(claims(), "another-secret-" + "z" * 32),
    ]:
        assert await first_frame_or_close(push, token) == (None, 4401)


async def test_a_new_app_user_while_postgres_is_away_is_closed_1013(
    settings: Settings, jwks: JwksServer
) -> None:
    gone = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/gone"
    async with ASGIConductor(create_app(app_settings(settings, jwks, database_url=gone))) as push:
        assert await first_frame_or_close(push, mint_hs256(claims())) == (None, 1013)
