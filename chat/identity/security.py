"""Passwords (Argon2id), access tokens (JWT) and refresh tokens (opaque, stored hashed)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.resources
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import jwt

from chat.errors import Unauthorized
from chat.settings import Settings


class Passwords:
    """Argon2id hashing, CPU- and memory-bound on purpose: run in threads, a few at a time."""

    def __init__(self, settings: Settings) -> None:
        # Imported here: the push process checks tokens but never passwords.
        from argon2 import PasswordHasher, Type
        from argon2.exceptions import InvalidHashError, VerificationError

        self._refused = (VerificationError, InvalidHashError)
        self._slots = asyncio.Semaphore(settings.password_hash_concurrency)
        self._hasher = PasswordHasher(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=1,
            type=Type.ID,
        )
        # Verifying unknown usernames against a real hash keeps login time flat, so it can't enumerate.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except self._refused:
            return False

    async def hash_async(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hash, password)

    async def verify_async(self, password_hash: str | None, password: str) -> bool:
        # A burst of logins queues here; each one holds no database connection while it waits.
        async with self._slots:
            return await asyncio.to_thread(self.verify, password_hash, password)


def password_weakness(password: str) -> str | None:
    """Why a new password is refused, or None: blank, or one of the most common passwords (checked
    lower-cased and without surrounding spaces, as guessing lists try those variants first)."""
    stripped = password.strip()
    if not stripped:
        return "must not be blank"
    if stripped.lower() in _common_passwords():
        return "is one of the most common passwords; choose another"
    return None


@functools.cache
def _common_passwords() -> frozenset[str]:
    # About 11,600 of 8 characters or more (chat/data/LICENSE-common-passwords.txt says whence),
    # read on first use: about 1.5 MB, in the api only.
    text = importlib.resources.files("chat").joinpath("data", "common-passwords.txt").read_text("utf-8")
    return frozenset(text.splitlines())


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    expires_at: datetime


# How many verified tokens a process remembers: about one per active user.
VERIFIED_TOKENS = 10_000

T = TypeVar("T")


class NotOurs(Unauthorized):
    """A token our key did not sign (wrong signature or algorithm, or not a JWS at all): maybe
    the app's backend's (chat.identity.apptokens), never one of ours."""


class VerifiedCache(Generic[T]):
    """Tokens that passed every check, with their expiry: a client sends the same token with
    every request, and checking it again (base64, signature, JSON, claims) was a fifth of a send's
    CPU. Only a verified token gets in; its expiry is checked on every use; oldest out first."""

    def __init__(self, size: int | None = None) -> None:
        self._size = size  # None: VERIFIED_TOKENS, read when it matters
        self._items: OrderedDict[str, tuple[T, float]] = OrderedDict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def get(self, token: str) -> T | None:
        known = self._items.get(token)
        if known is None:
            return None
        value, expires = known
        if time.time() >= expires:
            del self._items[token]  # expired: the full check says so
            return None
        self._items.move_to_end(token)
        return value

    def put(self, token: str, value: T, expires: float) -> None:
        self._items[token] = (value, expires)
        if len(self._items) > (self._size or VERIFIED_TOKENS):
            self._items.popitem(last=False)

    def drop(self, token: str) -> None:
        self._items.pop(token, None)


class Tokens:
    """Issues and checks access tokens. Only the configured algorithm is accepted, never `none`."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.secret_key.get_secret_value()
        self._algorithm = settings.algorithm
        self._verified: VerifiedCache[AccessClaims] = VerifiedCache()
        self.access_ttl = timedelta(minutes=settings.access_token_expire_minutes)
        self.refresh_ttl = timedelta(days=settings.refresh_token_expire_days)

    def issue_access(
        self, user_id: uuid.UUID, *, now: datetime | None = None, ttl: timedelta | None = None
    ) -> str:
        """An access token; `ttl` other than ACCESS_TOKEN_EXPIRE_MINUTES for the server API's tokens."""
        now = now or datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "exp": int((now + (ttl or self.access_ttl)).timestamp()),
            "jti": uuid.uuid4().hex,
            "type": "access",
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm)

    def verify_access(self, token: str | None) -> AccessClaims:
        if not token:
            raise Unauthorized("Missing bearer token.")
        known = self._verified.get(token)
        if known is not None:
            return known
        access = self._verify(token)
        self._verified.put(token, access, access.expires_at.timestamp())
        return access

    def _verify(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                options={"require": ["sub", "exp", "iat", "jti", "type"]},
            )
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as exc:
            raise NotOurs("The access token is invalid.", invalid_token=True) from exc
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.", invalid_token=True) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is invalid.", invalid_token=True) from exc
        if claims.get("type") != "access":
            raise Unauthorized("The token is not an access token.", invalid_token=True)
        # PyJWT reads a string of digits or a bool as a time, and lets any number through that
        # compares: a claim of the wrong type or past what a datetime holds is a bad token too.
        expires, issued = numeric_date(claims["exp"]), numeric_date(claims["iat"])
        sub = claims["sub"]
        try:
            user_id = uuid.UUID(sub) if isinstance(sub, str) and len(sub) <= UUID_TEXT_MAX else None
        except ValueError:
            user_id = None
        if expires is None or issued is None or user_id is None:
            raise Unauthorized("The access token is invalid.", invalid_token=True)
        return AccessClaims(user_id=user_id, expires_at=expires)


# Times a token may carry: after 1970 and before the year 9999 (datetime's range).
_LATEST = datetime(9999, 1, 1, tzinfo=UTC).timestamp()
UUID_TEXT_MAX = 45  # "urn:uuid:" and 36 characters


def numeric_date(value: object) -> datetime | None:
    """A JWT NumericDate (RFC 7519: a JSON number of seconds) as a datetime, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value < _LATEST:  # also NaN and the infinities
        return None
    return datetime.fromtimestamp(value, UTC)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    # The token has 256 bits of entropy, so a fast hash is enough; only the hash is stored.
    return hashlib.sha256(token.encode()).hexdigest()
