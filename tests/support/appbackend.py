"""A stand-in for the app's backend: its signing keys (RSA, EC P-256, Ed25519, an HS256 secret),
the JWKS it serves over real HTTP (counting fetches; it can be taken down), and the tokens it mints."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

APP_SECRET = "app-backend-secret-" + "y" * 32


@dataclass
class Key:
    kid: str
    algorithm: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk["kid"] = self.kid
        return jwk

    def public_pem(self) -> bytes:
        key = self.private.public_key()
        pem: bytes = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def rsa_key(kid: str | None = None) -> Key:
    return Key(kid or f"rsa-{uuid.uuid4().hex[:8]}", "RS256", rsa.generate_private_key(65537, 2048))


def ec_key(kid: str | None = None) -> Key:
    return Key(kid or f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))


def ed25519_key(kid: str | None = None) -> Key:
    return Key(kid or f"ed-{uuid.uuid4().hex[:8]}", "EdDSA", ed25519.Ed25519PrivateKey.generate())


def claims(sub: str | None = None, ttl: int = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": f"app-user-{uuid.uuid4().hex[:10]}" if sub is None else sub,
        "iat": now,
        "exp": now + ttl,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: Key, payload: dict[str, Any], *, kid: str | None = None) -> str:
    """A token signed with `key`, naming `kid` (the key's own unless given)."""
    return jwt.encode(payload, key.private, algorithm=key.algorithm, headers={"kid": kid or key.kid})


def mint_hs256(payload: dict[str, Any], secret: str | bytes = APP_SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def unsigned(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, "", algorithm="none")


@dataclass
class JwksServer:
    """The app's JWKS on a free local port: `keys` is what it serves, `fetches` how often it was asked."""

    keys: list[Key] = field(default_factory=list)
    cache_control: str | None = "max-age=300"
    down: bool = False
    fetches: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.down:
            return web.Response(status=503, text="down")
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return web.json_response({"keys": [k.public_jwk() for k in self.keys]}, headers=headers)


@contextlib.asynccontextmanager
async def serving_jwks(*keys: Key) -> AsyncIterator[JwksServer]:
    server = JwksServer(keys=list(keys))
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    try:
        yield server
    finally:
        await runner.cleanup()
