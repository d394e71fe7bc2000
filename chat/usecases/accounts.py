"""Built-in accounts: register, log in, refresh and log out.

Rate limits are the caller's: per address before these run (the api counts by client address),
and per username for logins, handed in as `Guesses`, since a login takes its slot before the
password is checked and says afterwards how it ended.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.errors import Conflict, Unauthorized
from chat.identity.security import Passwords, Tokens, hash_refresh_token, new_refresh_token
from chat.infra.db import Sessions
from chat.models import RefreshToken, User
from chat.schemas import UserOut


class Outcome(Protocol):
    """How one login attempt ended: a wrong password keeps its slot, anything else frees it."""

    async def failed(self) -> None: ...

    async def passed(self) -> None: ...


class Guesses(Protocol):
    """The limit on wrong passwords per username (api.throttle.FailureLimit)."""

    async def attempt(self, key: str) -> Outcome: ...


async def register(
    sessions: Sessions, passwords: Passwords, username: str, password: str, display_name: str | None
) -> UserOut:
    """A new user; 409 when the username is taken in any case."""
    key = username.lower()
    async with sessions() as session:
        taken = await session.scalar(select(User.id).where(User.username_key == key))
    if taken is not None:
        raise Conflict(f"The username {username!r} is taken.")
    # Hashed with no database connection held: a burst of registrations cannot starve the pool.
    password_hash = await passwords.hash_async(password)
    user = User(
        id=uuid.uuid4(),
        username=username,
        username_key=key,
        display_name=display_name or username,
        password_hash=password_hash,
        is_admin=False,
        created_at=datetime.now(UTC),
    )
    async with sessions() as session:
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(f"The username {username!r} is taken.") from None
    return UserOut.model_validate(user)


async def login(
    sessions: Sessions,
    passwords: Passwords,
    tokens: Tokens,
    guesses: Guesses,
    username: str,
    password: str,
) -> dict[str, Any]:
    """A token pair for a new login; 401 for a wrong username or password."""
    # A slot is taken before the password is checked, so a burst cannot check more guesses than
    # the limit allows; only a wrong password keeps it. Once a username has had too many wrong
    # passwords, even the right one waits: that is what stops guessing.
    key = username.lower()
    attempt = await guesses.attempt(key)
    try:
        async with sessions() as session:
            user = await session.scalar(select(User).where(User.username_key == key))
        ok = await passwords.verify_async(user.password_hash if user else None, password)
    except Exception:
        await attempt.passed()  # no password was checked (the database was away, say): no guess
        raise
    if user is None or not ok:
        await attempt.failed()
        raise Unauthorized("Wrong username or password.")
    await attempt.passed()
    async with sessions() as session:
        pair = await issue_pair(session, tokens, user.id, family_id=uuid.uuid4())
        await session.commit()
    return pair


async def refresh(sessions: Sessions, tokens: Tokens, refresh_token: str) -> dict[str, Any]:
    """The next token pair of a login; a token used twice ends the whole login (401)."""
    now = datetime.now(UTC)
    token_hash = hash_refresh_token(refresh_token)
    async with sessions() as session:
        token = await session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
        if token is None or token.revoked_at is not None or token.expires_at <= now:
            raise Unauthorized("The refresh token is invalid or expired.")
        await lock_login(session, token.family_id)
        # Claim the token atomically: of two concurrent uses, exactly one rotates it; and none
        # once a logout or a re-use revoked the login while this request waited for the lock.
        claimed = await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == token.id,
                RefreshToken.rotated_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(rotated_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            # A rotated token came back: someone holds a stolen copy. End that whole login.
            await revoke_family(session, token.family_id, now)
            await session.commit()
            raise Unauthorized("The refresh token was already used; this login has been revoked.")
        pair = await issue_pair(session, tokens, token.user_id, family_id=token.family_id)
        await session.commit()
    return pair


async def logout(sessions: Sessions, user_id: uuid.UUID, refresh_token: str) -> None:
    """End the login `refresh_token` belongs to, if it is the user's."""
    async with sessions() as session:
        token = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(refresh_token))
        )
        # Unknown or foreign tokens are ignored: logout is idempotent and reveals nothing.
        if token is not None and token.user_id == user_id:
            await lock_login(session, token.family_id)
            await revoke_family(session, token.family_id, datetime.now(UTC))
            await session.commit()


async def issue_pair(
    session: AsyncSession, tokens: Tokens, user_id: uuid.UUID, *, family_id: uuid.UUID
) -> dict[str, Any]:
    now = datetime.now(UTC)
    refresh = new_refresh_token()
    session.add(
        RefreshToken(
            id=uuid.uuid4(),
            user_id=user_id,
            family_id=family_id,
            token_hash=hash_refresh_token(refresh),
            created_at=now,
            expires_at=now + tokens.refresh_ttl,
        )
    )
    return {
        "access_token": tokens.issue_access(user_id, now=now),
        "token_type": "bearer",
        "expires_in": int(tokens.access_ttl.total_seconds()),
        "refresh_token": refresh,
    }


async def lock_login(session: AsyncSession, family_id: uuid.UUID) -> None:
    """Hold one login (a token family) until this transaction ends: its refreshes and revocations
    run one after another.

    Row locks cannot do this without deadlocks. A refresh that lost the race for its token still
    holds that row (Postgres locks the newest version before it re-checks the WHERE), and a
    revocation then locking the family's rows in id order waits for it while it waits for them.
    Taken first, before any row, this one lock is the only thing a login's transactions wait for;
    and each runs its statements after the previous one committed, so a revocation sees the token
    a refresh just issued. SQLite runs one writer at a time already.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(family_id.bytes[:8], "big", signed=True)
        await session.execute(select(func.pg_advisory_xact_lock(key)))


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    """End a login; the caller holds `lock_login` for it."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
