"""Authentication, the one step every api route and the push handshake share: the token is checked
(signature, claims, expiry), then the user it names is looked up.

A token outlives its user: a deleted user's token stayed good until it expired (sends were
accepted and dead-lettered, lists answered, uploads failed with 500). So each request reads the
user's row by primary key (about 0.3 ms on an AUTOCOMMIT connection, measured against a local
Postgres; no cache, so a user removed a moment ago is refused on the very next request).

Sends need only Redis, and must keep working while Postgres is away (the queue absorbs the
outage). So when Postgres cannot answer, the token's signature alone vouches for its user, the
outage is logged once, and only one request a second tries Postgres again until it answers.

The user's standing is decided in `user_standing` alone: the coming "deactivated" flag is read
there (and answered with a standing of its own: 401 on REST, close 4403 on the socket).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from chat.errors import Unauthorized
from chat.identity.security import AccessClaims, Tokens
from chat.infra.failures import unavailable
from chat.infra.outage import Outage
from chat.models import User

log = logging.getLogger("chat.auth")

GONE_DETAIL = "The user of this token no longer exists."


def user_gone() -> Unauthorized:
    """The 401 for a token whose user is gone (deleted between the check and a use case's read)."""
    return Unauthorized(GONE_DETAIL, invalid_token=True)


# While Postgres is away, how often a request tries it again (the others go by the token alone).
RETRY_SECONDS = 1.0


class Standing(enum.Enum):
    ACTIVE = "active"
    GONE = "gone"  # no such user (deleted): the token is refused
    UNCHECKED = "unchecked"  # Postgres is away: the token's signature alone vouches


async def user_standing(engine: AsyncEngine, user_id: uuid.UUID) -> Standing:
    """What the database says of the user a token names: one primary-key read.

    `engine` should be an AUTOCOMMIT one (the api's `reader`): one round trip, no transaction.
    """
    async with engine.connect() as conn:
        found = await conn.scalar(select(User.id).where(User.id == user_id))
    return Standing.ACTIVE if found is not None else Standing.GONE


class UserCheck:
    """`user_standing`, riding out a Postgres outage: UNCHECKED instead of an error.

    A lookup waits at most `timeout` seconds (a hung server must not hold every request).
    """

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self._engine = engine
        self._timeout = timeout
        self._outage = Outage(log, "The database (user check)")
        self._next_try = 0.0

    async def standing(self, user_id: uuid.UUID) -> Standing:
        if self._outage.down_since is not None and time.monotonic() < self._next_try:
            return Standing.UNCHECKED
        self._next_try = time.monotonic() + RETRY_SECONDS
        try:
            async with asyncio.timeout(self._timeout):
                standing = await user_standing(self._engine, user_id)
        except Exception as exc:
            if unavailable(exc) is None:
                raise  # not an outage: a bug, answered as one
            self._outage.down(exc)  # logged once, without a statement's parameters
            return Standing.UNCHECKED
        self._outage.up()
        return standing


class Authenticator:
    """The token, then its user: the api's BearerAuth and the push handshake both call this."""

    def __init__(self, tokens: Tokens, users: UserCheck) -> None:
        self._tokens = tokens
        self._users = users

    async def authenticate(self, token: str | None) -> AccessClaims:
        """The token's claims, or Unauthorized (401; the socket closes 4401)."""
        claims = self._tokens.verify_access(token)
        if await self._users.standing(claims.user_id) is Standing.GONE:
            raise user_gone()
        return claims
