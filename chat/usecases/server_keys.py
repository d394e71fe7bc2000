"""Server keys: what an app's backend calls `/api/v1/server/*` with.

A key is shown once, when made (`headless-chat server-keys create NAME`); only its SHA-256 is kept,
so a stolen database holds no usable key. A key is 256 random bits, so a hash of it cannot be
guessed back and needs no salt or slow hash (unlike a password). Revoking ends it on the next call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from chat.errors import Conflict, NotFound, Unauthorized
from chat.infra.db import Sessions
from chat.models import ServerKey

PREFIX = "hcsk_"  # recognisable in a leaked file or a secret scanner, like other services' keys
# last_used_at is written at most this often per key and process: not a write on every call.
LAST_USED_EVERY_SECONDS = 60.0


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


async def create(sessions: Sessions, name: str) -> str:
    """A new key named `name` (unique); the key itself, which is not kept."""
    key = PREFIX + secrets.token_urlsafe(32)
    async with sessions() as session:
        session.add(
            ServerKey(id=uuid.uuid4(), name=name, key_hash=key_hash(key), created_at=datetime.now(UTC))
        )
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(f"A server key named {name!r} exists already.") from None
    return key


async def list_keys(sessions: Sessions) -> list[KeyInfo]:
    async with sessions() as session:
        keys = (await session.scalars(select(ServerKey).order_by(ServerKey.created_at))).all()
    return [KeyInfo(k.name, k.created_at, k.last_used_at, k.revoked_at) for k in keys]


async def revoke(sessions: Sessions, name: str) -> None:
    async with sessions() as session:
        done = await session.execute(
            update(ServerKey)
            .where(ServerKey.name == name, ServerKey.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        await session.commit()
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"No live server key is named {name!r}.")


class ServerKeys:
    """Checks the keys of server calls: one indexed read a call, so a revocation holds at once."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self._noted: dict[uuid.UUID, float] = {}

    async def verify(self, key: str) -> str:
        """The key's name; Unauthorized for an unknown or revoked key."""
        digest = key_hash(key)
        async with self._sessions() as session:
            found = await session.scalar(select(ServerKey).where(ServerKey.key_hash == digest))
            # Found by its hash, compared again in constant time: no timing tells how much matched.
            if found is None or not hmac.compare_digest(found.key_hash, digest) or found.revoked_at:
                raise Unauthorized("Not a valid server key.", invalid_token=True)
            now = time.monotonic()
            if now - self._noted.get(found.id, -LAST_USED_EVERY_SECONDS) >= LAST_USED_EVERY_SECONDS:
                self._noted[found.id] = now
                found.last_used_at = datetime.now(UTC)
                await session.commit()
            return found.name
