"""Register, log in, refresh and log out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from falcon.asgi import Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.fields import NoNul
from api.http import parse, send
from api.throttle import AddressLimit, FailureLimit
from chat.errors import Conflict, Unauthorized
from chat.models import RefreshToken, User
from chat.schemas import UserOut
from chat.security import Passwords, Tokens, hash_refresh_token, new_refresh_token, password_weakness

Username = Annotated[str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]


def _not_weak(password: str) -> str:
    problem = password_weakness(password)
    if problem is not None:
        raise ValueError(problem)
    return password


# What a new password must be; logging in takes whatever was set before these rules.
Password = Annotated[str, Field(min_length=8, max_length=128), AfterValidator(_not_weak)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DisplayName(_Body):
    display_name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), NoNul]


class RegisterBody(_Body):
    username: Username
    password: Password
    display_name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), NoNul] | None
    ) = None


class LoginBody(_Body):
    username: Annotated[str, Field(min_length=1, max_length=128), NoNul]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class RefreshBody(_Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=256), NoNul]

    @field_validator("refresh_token")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


@dataclass(frozen=True, slots=True)
class _PasswordForm:
    """What both password forms use: accounts, hashing, and a limit on attempts per address."""

    auth_required = False

    sessions: async_sessionmaker[AsyncSession]
    passwords: Passwords
    per_address: AddressLimit
    max_body: int


@dataclass(frozen=True, slots=True)
class Register(_PasswordForm):
    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, RegisterBody, self.max_body)
        await self.per_address.count(req, resp)
        key = body.username.lower()
        async with self.sessions() as session:
            taken = await session.scalar(select(User.id).where(User.username_key == key))
        if taken is not None:
            raise Conflict(f"The username {body.username!r} is taken.")
        # Hashed with no database connection held: a burst of registrations cannot starve the pool.
        password_hash = await self.passwords.hash_async(body.password)
        user = User(
            id=uuid.uuid4(),
            username=body.username,
            username_key=key,
            display_name=body.display_name or body.username,
            password_hash=password_hash,
            is_admin=False,
            created_at=datetime.now(UTC),
        )
        async with self.sessions() as session:
            session.add(user)
            try:
                await session.commit()
            except IntegrityError:
                raise Conflict(f"The username {body.username!r} is taken.") from None
        resp.set_header("Location", f"/api/v1/users/{user.id}")
        send(resp, UserOut.model_validate(user), 201)


@dataclass(frozen=True, slots=True)
class Login(_PasswordForm):
    tokens: Tokens
    # Once a username has had too many wrong passwords, even the right one waits: that is what
    # stops guessing.
    failures: FailureLimit

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, LoginBody, self.max_body, allow_form=True)
        key = body.username.lower()
        await self.per_address.count(req, resp)
        # A slot is taken before the password is checked, so a burst cannot check more guesses than
        # the limit allows; only a wrong password keeps it.
        attempt = await self.failures.attempt(key)
        try:
            async with self.sessions() as session:
                user = await session.scalar(select(User).where(User.username_key == key))
            ok = await self.passwords.verify_async(user.password_hash if user else None, body.password)
        except Exception:
            await attempt.passed()  # no password was checked (the database was away, say): no guess
            raise
        if user is None or not ok:
            await attempt.failed()
            raise Unauthorized("Wrong username or password.")
        await attempt.passed()
        async with self.sessions() as session:
            pair = await issue_pair(session, self.tokens, user.id, family_id=uuid.uuid4())
            await session.commit()
        send(resp, pair)


@dataclass(frozen=True, slots=True)
class Refresh:
    auth_required = False

    sessions: async_sessionmaker[AsyncSession]
    tokens: Tokens
    max_body: int

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, RefreshBody, self.max_body)
        now = datetime.now(UTC)
        token_hash = hash_refresh_token(body.refresh_token)
        async with self.sessions() as session:
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
            pair = await issue_pair(session, self.tokens, token.user_id, family_id=token.family_id)
            await session.commit()
        send(resp, pair)


@dataclass(frozen=True, slots=True)
class Logout:
    sessions: async_sessionmaker[AsyncSession]
    max_body: int

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, RefreshBody, self.max_body)
        user_id = current_user(req)
        async with self.sessions() as session:
            token = await session.scalar(
                select(RefreshToken).where(RefreshToken.token_hash == hash_refresh_token(body.refresh_token))
            )
            # Unknown or foreign tokens are ignored: logout is idempotent and reveals nothing.
            if token is not None and token.user_id == user_id:
                await lock_login(session, token.family_id)
                await revoke_family(session, token.family_id, datetime.now(UTC))
                await session.commit()
        resp.status = 204


async def issue_pair(
    session: AsyncSession, tokens: Tokens, user_id: uuid.UUID, *, family_id: uuid.UUID
) -> dict[str, object]:
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
