"""Every kind of bad bearer token is a 401 with a Bearer challenge, never anything else."""

from __future__ import annotations

import base64
import time
import uuid
import warnings

import jwt
import orjson

from chat.settings import Settings
from tests.support import ApiClient, assert_problem


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def claims(user_id: str, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "sub": user_id,
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "type": "access",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs512(payload: dict[str, object], key: str) -> str:
    with warnings.catch_warnings():  # PyJWT warns that the key is short for SHA-512; that is the point
        warnings.simplefilter("ignore")
        return jwt.encode(payload, key, algorithm="HS512")


async def test_bad_tokens_are_401_with_bearer_challenge(api: ApiClient, settings: Settings) -> None:
    user = await api.user()
    key = settings.secret_key.get_secret_value()
    good = user.access_token
    header, payload, signature = good.split(".")
    tampered_payload = b64(claims(str(uuid.uuid4())))
    bad_headers = {
        "none": None,
        "empty bearer": "Bearer ",
        "garbage": "Bearer not-a-jwt",
        "basic scheme": "Basic dXNlcjpwYXNz",
        "no scheme": good,
        "alg none": "Bearer " + b64({"alg": "none", "typ": "JWT"}) + "." + payload + ".",
        "tampered payload": f"Bearer {header}.{tampered_payload}.{signature}",
        "other key": "Bearer "
        + jwt.encode(claims(user.id), "another-secret-key-" + "y" * 32, algorithm="HS256"),
        "other algorithm": "Bearer " + hs512(claims(user.id), key),
        "expired": "Bearer "
        + jwt.encode(claims(user.id, iat=int(time.time()) - 900, exp=int(time.time()) - 10), key),
        "refresh type": "Bearer " + jwt.encode(claims(user.id, type="refresh"), key),
        "no type": "Bearer " + jwt.encode(claims(user.id, type=None), key),
        "no exp": "Bearer " + jwt.encode(claims(user.id, exp=None), key),
        "no jti": "Bearer " + jwt.encode(claims(user.id, jti=None), key),
        "sub not a uuid": "Bearer " + jwt.encode(claims("admin"), key),
    }
    for name, value in bad_headers.items():
        headers = {} if value is None else {"Authorization": value}
        for method, path in (("GET", "/users/me"), ("GET", "/conversations"), ("POST", "/auth/logout")):
            result = await api.request(method, path, headers=headers, json={"refresh_token": "x"})
            assert_problem(result, 401)
            challenge = result.headers.get("www-authenticate", "")
            assert challenge.startswith("Bearer"), (name, challenge)
    # And the good one works.
    assert (await api.get("/users/me", headers={"Authorization": f"Bearer {good}"})).status_code == 200
    assert (await api.get("/users/me", headers={"Authorization": f"bearer {good}"})).status_code == 200


async def test_public_calls_need_no_token(api: ApiClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await api.conductor.simulate_get(path)).status_code == 200
        assert (await api.get(path)).status_code == 200
