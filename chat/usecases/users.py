"""Users: me, renaming me, username prefix search, a public profile with presence, and granting
admin."""

from __future__ import annotations

import re
import uuid

from redis.asyncio import Redis
from sqlalchemy import select, update

from chat.domain import cursors
from chat.errors import NotFound, field_error
from chat.identity.authn import user_gone
from chat.infra.db import Sessions
from chat.models import User
from chat.realtime import presence
from chat.schemas import UserOut, UserProfileOut

_USERNAME_PART = re.compile(r"[a-z0-9_.-]{0,32}")


async def me(sessions: Sessions, user_id: uuid.UUID) -> UserOut:
    async with sessions() as session:
        user = await session.get(User, user_id)
    if user is None:
        raise user_gone()
    return UserOut.model_validate(user)


async def set_admin(sessions: Sessions, username: str, admin: bool) -> bool:
    """Grant or revoke admin (the CLI's make-admin and revoke-admin); False when no such user."""
    async with sessions() as session:
        result = await session.execute(
            update(User).where(User.username_key == username.lower()).values(is_admin=admin)
        )
        await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def rename(sessions: Sessions, user_id: uuid.UUID, display_name: str) -> UserOut:
    """Set my display name; me as this change left me."""
    async with sessions() as session:
        # RETURNING: the answer is the row as this request left it. Read back after the commit,
        # it could be another PATCH's, committed in between.
        user = await session.scalar(
            update(User).where(User.id == user_id).values(display_name=display_name).returning(User)
        )
        await session.commit()
    if user is None:
        raise user_gone()
    return UserOut.model_validate(user)


async def search(
    sessions: Sessions, prefix: str, limit: int, cursor: str | None
) -> tuple[list[UserOut], str | None]:
    """Users whose username starts with `prefix` (any case), by username from where `cursor` (a
    `next_cursor` this returned) left off; and the next page's cursor."""
    prefix = prefix.strip().lower()
    if not _USERNAME_PART.fullmatch(prefix):
        # No username holds anything else (spaces, '%', NUL, a 33rd character): nothing matches.
        return [], None
    after = _after(cursor)
    query = select(User).order_by(User.username_key).limit(limit + 1)
    if prefix:
        query = query.where(User.username_key.startswith(prefix, autoescape=True))
    if after:
        query = query.where(User.username_key > after)
    async with sessions() as session:
        users = list(await session.scalars(query))
    more = len(users) > limit
    users = users[:limit]
    following = cursors.encode(users[-1].username_key) if more else None
    return [UserOut.model_validate(u) for u in users], following


def _after(cursor: str | None) -> str | None:
    """The username a search cursor names; 422 for anything a search did not issue."""
    if not cursor:
        return None
    try:
        [value] = cursors.decode(cursor, 1)
        if not _USERNAME_PART.fullmatch(value):
            raise ValueError("not a username")
        return value
    except ValueError:
        raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None


async def profile(sessions: Sessions, redis: Redis, user_id: uuid.UUID) -> UserProfileOut:
    """Anyone's public profile, with whether they are online and when they were last seen."""
    async with sessions() as session:
        user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    online, last_seen = await presence.status(redis, user_id)
    return UserProfileOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        created_at=user.created_at,
        online=online,
        last_seen_at=last_seen,
    )
