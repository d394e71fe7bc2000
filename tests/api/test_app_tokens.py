"""App tokens on the api: JWTs the app's backend signs (HS256 secret, or RSA / EC / Ed25519 keys
of a JWKS served over real HTTP), their users made on first sight, and every way one is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import types
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, update

import chat.identity.jwks as jwks_module
from api.deps import Deps
from chat.models import User
from chat.settings import Settings
from tests.support import ApiClient, assert_problem
from tests.support.appbackend import (
    APP_SECRET,
    JwksServer,
    Key,
    claims,
    ec_key,
    ed25519_key,
    mint,
    mint_hs256,
    rsa_key,
    serving_jwks,
    unsigned,
)
from tests.support.apps import api_with
from tests.support.handshake import closed_port


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    async with serving_jwks(rsa_key(), ec_key(), ed25519_key()) as server:
        yield server


@pytest.fixture
async def app_api(settings: Settings, jwks: JwksServer) -> AsyncIterator[ApiClient]:
    async with api_with(settings, app_jwt_secret=APP_SECRET, app_jwks_url=jwks.url) as client:
        yield client


async def me(api: ApiClient, token: str) -> Any:
    return await api.get("/users/me", headers={"Authorization": f"Bearer {token}"})


def key_of(server: JwksServer, algorithm: str) -> Key:
    return next(k for k in server.keys if k.algorithm == algorithm)


class ShiftedClock:
    """Moves chat.identity.jwks's monotonic clock forward (the JWKS cache's ages), nothing else."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        shifted = types.SimpleNamespace(monotonic=lambda: time.monotonic() + self.offset)
        monkeypatch.setattr(jwks_module, "time", shifted)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
async def test_a_jwks_key_of_each_type_signs_a_token_that_makes_its_user(
    app_api: ApiClient, jwks: JwksServer, algorithm: str
) -> None:
    payload = claims(name="Ada Lovelace")
    answer = await me(app_api, mint(key_of(jwks, algorithm), payload))
    assert answer.status_code == 200, answer.text
    user = answer.json
    assert user["external_id"] == payload["sub"]
    assert user["display_name"] == "Ada Lovelace"
    assert user["username"] == f"u_{uuid.UUID(user['id']).hex[:12]}"


async def test_an_hs256_token_signed_with_the_app_secret_is_accepted(app_api: ApiClient) -> None:
    payload = claims(preferred_username=f"ada_{uuid.uuid4().hex[:6]}")
    answer = await me(app_api, mint_hs256(payload))
    assert answer.status_code == 200, answer.text
    assert answer.json["username"] == payload["preferred_username"]


async def test_built_in_accounts_have_no_external_id(api: ApiClient) -> None:
    alice = await api.user()
    assert (await api.get("/users/me", alice)).json["external_id"] is None


async def test_a_taken_or_invalid_preferred_username_falls_back(app_api: ApiClient, api: ApiClient) -> None:
    taken = await api.user()
    for wanted in [taken.username.upper(), "no", "has space", "x" * 33]:
        user = (await me(app_api, mint_hs256(claims(preferred_username=wanted)))).json
        assert user["username"] == f"u_{uuid.UUID(user['id']).hex[:12]}", wanted


async def test_a_new_name_updates_the_display_name_and_the_same_token_writes_nothing(
    app_api: ApiClient, deps: Deps
) -> None:
    sub = f"app-{uuid.uuid4().hex}"
    first = await me(app_api, mint_hs256(claims(sub, name="Old Name")))
    assert first.json["display_name"] == "Old Name"
    renamed = await me(app_api, mint_hs256(claims(sub, name="New Name")))
    assert renamed.json["display_name"] == "New Name"
    assert renamed.json["id"] == first.json["id"]
    async with deps.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(User).where(User.external_id == sub)) == 1


async def test_two_first_requests_at_once_make_one_user(app_api: ApiClient, deps: Deps) -> None:
    sub = f"app-{uuid.uuid4().hex}"
    tokens = [mint_hs256(claims(sub, name=f"n{i}", preferred_username="same_name")) for i in range(8)]
    answers = await asyncio.gather(*(me(app_api, token) for token in tokens))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert len({a.json["id"] for a in answers}) == 1
    async with deps.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(User).where(User.external_id == sub)) == 1


async def test_an_app_user_cannot_log_in_with_a_password(app_api: ApiClient, deps: Deps) -> None:
    name = f"ext_{uuid.uuid4().hex[:8]}"
    assert (await me(app_api, mint_hs256(claims(preferred_username=name)))).status_code == 200
    async with deps.engine.connect() as conn:
        assert await conn.scalar(select(User.password_hash).where(User.username == name)) is None
    login = await app_api.post("/auth/login", json={"username": name, "password": ""})
    assert login.status_code in (401, 422)
    login = await app_api.post("/auth/login", json={"username": name, "password": "correct horse battery"})
    assert_problem(login, 401)


async def test_a_deactivated_or_erased_user_is_refused_at_once(app_api: ApiClient, deps: Deps) -> None:
    for column in (User.deactivated_at, User.erased_at):
        sub = f"app-{uuid.uuid4().hex}"
        token = mint_hs256(claims(sub))
        assert (await me(app_api, token)).status_code == 200
        async with deps.engine.begin() as conn:
            await conn.execute(update(User).where(User.external_id == sub).values({column: func.now()}))
        refused = await me(app_api, token)
        assert_problem(refused, 401)
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def hs256_by_hand(payload: dict[str, Any], key: bytes, alg: str = "HS256") -> str:
    """HS256 signed with any bytes (PyJWT refuses a PEM as an HMAC key, as it should)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(signature)


def rejections(server: JwksServer) -> dict[str, str]:
    rsa, ec = key_of(server, "RS256"), key_of(server, "ES256")
    now = int(time.time())
    return {
        "alg none": unsigned(claims()),
        "HS256 signed with the RSA public key's PEM": hs256_by_hand(claims(), rsa.public_pem()),
        "HS256 with another secret": mint_hs256(claims(), "another-secret-" + "z" * 32),
        "expired": mint(rsa, claims(iat=now - 1000, exp=now - 100)),
        "missing exp": mint(rsa, {"sub": "someone", "iat": now}),
        "missing iat": mint(rsa, {"sub": "someone", "exp": now + 60}),
        "missing sub": mint(rsa, {"iat": now, "exp": now + 60}),
        "empty sub": mint(rsa, claims(sub="")),
        "too long-lived": mint(rsa, claims(ttl=86400 + 1)),
        "sub too long": mint(rsa, claims(sub="x" * 129)),
        "sub with a control character": mint(rsa, claims(sub="bad\x00sub")),
        "sub with a newline": mint(rsa, claims(sub="bad\nsub")),
        "sub not a string": mint(rsa, {**claims(), "sub": 12345}),
        "exp as a string": mint(rsa, {"sub": "someone", "iat": now, "exp": str(now + 60)}),
        "unknown kid": mint(rsa, claims(), kid="no-such-kid"),
        "EC key's kid on an RS256 token": mint(rsa, claims(), kid=ec.kid),
        "iat in the future": mint(rsa, claims(iat=now + 3600, exp=now + 3700)),
        "garbage": "not.a.jwt",
    }


async def test_every_bad_app_token_is_401(app_api: ApiClient, jwks: JwksServer) -> None:
    answers = {name: await me(app_api, token) for name, token in rejections(jwks).items()}
    assert {n: a.status_code for n, a in answers.items()} == dict.fromkeys(answers, 401)
    for answer in answers.values():
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_issuer_and_audience_are_checked_when_set(settings: Settings, jwks: JwksServer) -> None:
    rsa = key_of(jwks, "RS256")
    async with api_with(
        settings, app_jwks_url=jwks.url, app_jwt_issuer="https://app.example", app_jwt_audience="chat"
    ) as api:
        good = claims(iss="https://app.example", aud="chat")
        assert (await me(api, mint(rsa, good))).status_code == 200
        wrong_iss, wrong_aud = {**good, "iss": "https://evil.example"}, {**good, "aud": "other"}
        no_iss = {k: v for k, v in good.items() if k != "iss"}
        no_aud = {k: v for k, v in good.items() if k != "aud"}
        for bad in (wrong_iss, wrong_aud, no_iss, no_aud):
            assert_problem(await me(api, mint(rsa, bad)), 401)


async def test_an_hs256_token_is_401_when_only_a_jwks_is_set(settings: Settings, jwks: JwksServer) -> None:
    async with api_with(settings, app_jwks_url=jwks.url) as api:
        assert_problem(await me(api, mint_hs256(claims())), 401)
        assert (await me(api, mint(key_of(jwks, "ES256"), claims()))).status_code == 200


async def test_a_flood_of_random_kids_fetches_the_jwks_at_most_once_more(
    app_api: ApiClient, jwks: JwksServer
) -> None:
    rsa = key_of(jwks, "RS256")
    assert (await me(app_api, mint(rsa, claims()))).status_code == 200
    assert jwks.fetches == 1
    flood = [mint(rsa, claims(), kid=uuid.uuid4().hex) for _ in range(100)]
    answers = await asyncio.gather(*(me(app_api, token) for token in flood))
    assert {a.status_code for a in answers} == {401}
    assert jwks.fetches <= 2


async def test_key_rotation_overlap_then_the_old_key_is_refused(
    app_api: ApiClient, jwks: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ShiftedClock(monkeypatch)
    old, new = key_of(jwks, "RS256"), rsa_key()
    old_token = mint(old, claims())
    assert (await me(app_api, old_token)).status_code == 200
    jwks.keys.append(new)  # the app publishes the next key, then starts signing with it
    clock.advance(61)  # an unknown kid is looked up again, at most once a minute
    new_token = mint(new, claims())
    assert (await me(app_api, new_token)).status_code == 200
    assert (await me(app_api, old_token)).status_code == 200
    assert (await me(app_api, mint(old, claims()))).status_code == 200
    jwks.keys.remove(old)  # the overlap ends
    assert (await me(app_api, old_token)).status_code == 200  # until the cached JWKS expires
    clock.advance(301)  # max-age=300
    assert_problem(await me(app_api, old_token), 401)
    assert_problem(await me(app_api, mint(old, claims())), 401)
    assert (await me(app_api, new_token)).status_code == 200


async def test_with_the_jwks_down_cached_keys_work_and_a_new_kid_is_401(
    app_api: ApiClient, jwks: JwksServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ShiftedClock(monkeypatch)
    rsa = key_of(jwks, "RS256")
    assert (await me(app_api, mint(rsa, claims()))).status_code == 200
    jwks.down = True
    clock.advance(3600)  # the cached JWKS is stale: the fetch fails, its keys are kept
    assert (await me(app_api, mint(rsa, claims()))).status_code == 200
    newcomer = rsa_key()
    jwks.keys.append(newcomer)
    clock.advance(61)
    assert_problem(await me(app_api, mint(newcomer, claims())), 401)
    assert jwks.fetches >= 2


async def test_with_postgres_away_a_new_app_user_is_503_and_our_tokens_still_pass(
    api: ApiClient, settings: Settings
) -> None:
    alice, _bob, cid = await api.pair()
    gone = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/gone"
    async with api_with(settings, database_url=gone, app_jwt_secret=APP_SECRET) as outage:
        refused = await me(outage, mint_hs256(claims()))
        assert_problem(refused, 503)
        assert int(refused.headers["retry-after"]) >= 1
        sent = await outage.post(f"/conversations/{cid}/messages", alice, json={"body": "still here"})
        assert sent.status_code == 202, sent.text
