"""The server API's users: the app's backend names them by its own ids (`external_id`), makes and
updates them, mints their tokens, deactivates, erases and exports them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from chat.errors import Conflict, NotFound, field_error
from chat.identity.security import Tokens
from chat.infra.db import Sessions
from chat.jobqueue.accept import Enqueuer
from chat.models import User
from chat.realtime.usercontrol import deactivated
from chat.schemas import UserOut
from chat.usecases.erasure import request_erasure
from chat.usecases.external_users import USERNAME, by_external_id, ensure_user


class ServerUserOut(UserOut):
    """A user as the app's backend sees it: with what it keeps with them, and whether they may in."""

    metadata: dict[str, Any] | None
    deactivated: bool


def server_view(user: User) -> ServerUserOut:
    return ServerUserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        created_at=user.created_at,
        external_id=user.external_id,
        metadata=user.app_metadata,
        deactivated=user.deactivated_at is not None or user.erased_at is not None,
    )


async def find(sessions: Sessions, external_id: str) -> User:
    async with sessions() as session:
        user = await by_external_id(session, external_id)
    if user is None:
        raise NotFound("No user has this external id.")
    return user


async def put(
    sessions: Sessions,
    external_id: str,
    display_name: str | None,
    username: str | None,
    metadata: dict[str, Any] | None,
) -> tuple[ServerUserOut, bool]:
    """Make the user, or update what is given; the user and whether it was made. A username
    someone else has is a 409, for a new user too (ensure_user would quietly pick another)."""
    if username is not None:
        await _refuse_taken(sessions, username, external_id)
    user, created = await ensure_user(
        sessions,
        external_id=external_id,
        display_name=display_name,
        username=username,
        metadata=metadata,
    )
    if not created and username is not None and username != user.username:
        user = await _rename(sessions, user.id, username)
    return server_view(user), created


async def _refuse_taken(sessions: Sessions, username: str, external_id: str) -> None:
    async with sessions() as session:
        taken = await session.scalar(
            select(User.id).where(
                User.username_key == username.lower(), User.external_id.is_distinct_from(external_id)
            )
        )
    if taken is not None:
        raise _taken(username)


def _taken(username: str) -> Conflict:
    return Conflict(f"The username {username!r} is taken.")


async def _rename(sessions: Sessions, user_id: uuid.UUID, username: str) -> User:
    if not USERNAME.match(username):
        raise field_error("body.username", "3 to 32 of A-Z, a-z, 0-9, '_', '.', '-'.")
    async with sessions() as session:
        try:
            user: User = (
                await session.scalars(
                    update(User)
                    .where(User.id == user_id)
                    .values(username=username, username_key=username.lower())
                    .returning(User)
                )
            ).one()
            await session.commit()
        except IntegrityError:  # taken since put looked
            raise _taken(username) from None
    return user


async def set_active(sessions: Sessions, redis: Redis, external_id: str, active: bool) -> None:
    """Deactivate (tokens refused at once, open sockets closed 4403) or reactivate a user."""
    user = await find(sessions, external_id)
    if user.erased_at is not None:
        raise Conflict("This user was erased.") if active else NotFound("No user has this external id.")
    async with sessions() as session:
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(deactivated_at=None if active else (user.deactivated_at or datetime.now(UTC)))
        )
        await session.commit()
    if not active:
        await deactivated(redis, user.id)


async def erase(sessions: Sessions, redis: Redis, queue: Enqueuer, external_id: str) -> str:
    """Queue the erasure of a user (deactivated at once); the job's id."""
    user = await find(sessions, external_id)
    return await request_erasure(sessions, redis, queue, user.id)


async def token(
    sessions: Sessions,
    tokens: Tokens,
    external_id: str,
    display_name: str | None,
    ttl: timedelta,
) -> dict[str, Any]:
    """An access token for the user (made when new), as `POST /auth/login` answers one."""
    user, _ = await ensure_user(sessions, external_id=external_id, display_name=display_name, username=None)
    if user.deactivated_at is not None or user.erased_at is not None:
        raise Conflict("This user is deactivated.")
    return {
        "access_token": tokens.issue_access(user.id, ttl=ttl),
        "token_type": "bearer",
        "expires_in": int(ttl.total_seconds()),
    }
