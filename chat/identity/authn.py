"""Authentication, the one step every api route and the push handshake share: the token is checked
(signature, claims, expiry), then the user it names is looked up.

A token outlives its user: a deleted user's token stayed good until it expired (sends were
accepted and dead-lettered, lists answered, uploads failed with 500). So each request reads the
user's row (no cache, so a user removed a moment ago is refused on the very next request); the
requests of one event-loop turn share that read (chat.identity.standing).

Sends need only Redis, and must keep working while Postgres is away (the queue absorbs the
outage). So when Postgres cannot answer, the token's signature alone vouches for its user, the
outage is logged once, and only one request a second tries Postgres again until it answers.

The user's standing is decided in chat.identity.standing alone, in that same read: a deactivated
or erased user is refused at once (401 on REST, close 4403 on the socket).

App tokens (chat.identity.apptokens), when configured, are accepted wherever ours are: a token our
key did not sign is tried as one. Its `sub` names a user by the app's id; `ensure_user` makes it on
first sight, and a small cache here (sub → user id and the last `name` seen) keeps steady traffic
to that same one read, no write. While Postgres is away an app token whose `sub` is cached goes by
its signature as ours do; one whose `sub` is not cannot be resolved: 503 (the socket closes 1013).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from chat.errors import ServiceUnavailable, Unauthorized
from chat.identity.apptokens import AppClaims, AppTokens
from chat.identity.security import AccessClaims, NotOurs, Tokens, VerifiedCache
from chat.identity.standing import SharedReads, Standing, standing_of
from chat.infra.db import Sessions
from chat.infra.failures import unavailable
from chat.infra.outage import Outage
from chat.settings import Settings
from chat.usecases.external_users import ensure_user

log = logging.getLogger("chat.auth")

GONE_DETAIL = "The user of this token no longer exists."


def user_gone() -> Unauthorized:
    """The 401 for a token whose user is gone (deleted between the check and a use case's read)."""
    return Unauthorized(GONE_DETAIL, invalid_token=True)


class Deactivated(Unauthorized):
    """A deactivated or erased user's token: 401 on REST, close 4403 on the socket."""

    def __init__(self) -> None:
        super().__init__("This user has been deactivated.", invalid_token=True)


# While Postgres is away, how often a request tries it again (the others go by the token alone).
RETRY_SECONDS = 1.0


def admit(standing: Standing) -> None:
    """Raise for a standing that refuses its token."""
    if standing is Standing.GONE:
        raise user_gone()
    if standing is Standing.DEACTIVATED:
        raise Deactivated()


class UserCheck:
    """`user_standing`, riding out a Postgres outage: UNCHECKED instead of an error.

    A lookup waits at most `timeout` seconds (a hung server must not hold every request).
    """

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self._reads = SharedReads(engine)
        self._timeout = timeout
        self._outage = Outage(log, "The database (user check)")
        self._next_try = 0.0

    @property
    def timeout(self) -> float:
        return self._timeout

    def resting(self) -> bool:
        """Postgres is away and not to be tried again yet."""
        return self._outage.down_since is not None and time.monotonic() < self._next_try

    async def standing(self, user_id: uuid.UUID) -> Standing:
        if self.resting():
            return Standing.UNCHECKED
        self._next_try = time.monotonic() + RETRY_SECONDS
        try:
            async with asyncio.timeout(self._timeout):
                standing = await self._reads.standing(user_id)
        except Exception as exc:
            if unavailable(exc) is None:
                raise  # not an outage: a bug, answered as one
            self._outage.down(exc)  # logged once, without a statement's parameters
            return Standing.UNCHECKED
        self._outage.up()
        return standing


# How many app users' subs a process remembers: about one per active user.
KNOWN_SUBS = 10_000


class AppUsers:
    """App tokens to users: the token, its `sub` to a user id (made on first sight), its standing."""

    def __init__(self, tokens: AppTokens, sessions: Sessions, users: UserCheck) -> None:
        self._tokens = tokens
        self._sessions = sessions
        self._users = users
        # sub → (user id, the last `name` seen); never expires, the standing is read every time.
        self._known: VerifiedCache[tuple[uuid.UUID, str | None]] = VerifiedCache(KNOWN_SUBS)

    async def authenticate(self, token: str) -> AccessClaims:
        claims = await self._tokens.verify(token)
        known = self._known.get(claims.sub)
        if known is not None and claims.name in (None, known[1]):
            standing = await self._users.standing(known[0])
            if standing is not Standing.GONE:
                admit(standing)
                return AccessClaims(user_id=known[0], expires_at=claims.expires_at)
            self._known.drop(claims.sub)  # deleted: made again below, as on first sight
            known = None
        user_id, standing = await self._ensure(claims, known)
        admit(standing)
        return AccessClaims(user_id=user_id, expires_at=claims.expires_at)

    async def _ensure(
        self, claims: AppClaims, known: tuple[uuid.UUID, str | None] | None
    ) -> tuple[uuid.UUID, Standing]:
        try:
            if self._users.resting():
                raise ConnectionRefusedError("Postgres is away (user check)")
            async with asyncio.timeout(self._users.timeout):
                user, _ = await ensure_user(
                    self._sessions,
                    external_id=claims.sub,
                    display_name=claims.name,
                    username=claims.preferred_username,
                )
        except Exception as exc:
            if unavailable(exc) is None and not isinstance(exc, ConnectionRefusedError):
                raise  # not an outage: a bug, answered as one
            if known is not None:  # a new name waits for Postgres; the user is known
                return known[0], Standing.UNCHECKED
            raise ServiceUnavailable("The database is unavailable; try again shortly.") from exc
        self._known.put(claims.sub, (user.id, claims.name or known_name(known)), math.inf)
        return user.id, standing_of(user.deactivated_at, user.erased_at)


def known_name(known: tuple[uuid.UUID, str | None] | None) -> str | None:
    return known[1] if known is not None else None


class Authenticator:
    """The token, then its user: the api's BearerAuth and the push handshake both call this."""

    def __init__(self, tokens: Tokens, users: UserCheck, apps: AppUsers | None = None) -> None:
        self._tokens = tokens
        self._users = users
        self._apps = apps

    async def authenticate(self, token: str | None) -> AccessClaims:
        """The token's claims, or Unauthorized (401; the socket closes 4401; Deactivated: 4403),
        or ServiceUnavailable (an app user Postgres is needed to resolve, while it is away)."""
        try:
            claims = self._tokens.verify_access(token)
        except NotOurs:
            if self._apps is None or token is None:
                raise
            return await self._apps.authenticate(token)
        admit(await self._users.standing(claims.user_id))
        return claims


def app_users(settings: Settings, sessions: Sessions, users: UserCheck) -> AppUsers | None:
    """The app token path, when the deployment configured one (APP_JWT_SECRET or APP_JWKS_URL)."""
    return AppUsers(AppTokens(settings), sessions, users) if AppTokens.configured(settings) else None
