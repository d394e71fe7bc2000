"""The current user, user search and public profiles with presence."""

from __future__ import annotations

import re
from dataclasses import dataclass

from falcon.asgi import Request, Response
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.http import limit_param, parse, path_uuid, send
from api.resources.auth import DisplayName
from chat import cursors, presence
from chat.errors import NotFound, Unauthorized, field_error
from chat.models import User
from chat.schemas import UserOut, UserProfileOut

_USERNAME_PART = re.compile(r"[a-z0-9_.-]{0,32}")


@dataclass(frozen=True, slots=True)
class Me:
    sessions: async_sessionmaker[AsyncSession]
    max_body: int

    async def on_get(self, req: Request, resp: Response) -> None:
        async with self.sessions() as session:
            user = await session.get(User, current_user(req))
        if user is None:
            raise Unauthorized("The user of this token no longer exists.", invalid_token=True)
        send(resp, UserOut.model_validate(user))

    async def on_patch(self, req: Request, resp: Response) -> None:
        body = await parse(req, DisplayName, self.max_body)
        async with self.sessions() as session:
            # RETURNING: the answer is the row as this request left it. Read back after the commit,
            # it could be another PATCH's, committed in between.
            user = await session.scalar(
                update(User)
                .where(User.id == current_user(req))
                .values(display_name=body.display_name)
                .returning(User)
            )
            await session.commit()
        if user is None:
            raise Unauthorized("The user of this token no longer exists.", invalid_token=True)
        send(resp, UserOut.model_validate(user))


@dataclass(frozen=True, slots=True)
class Users:
    """`GET /users?q=prefix`: case-insensitive username prefix search, paged by username."""

    sessions: async_sessionmaker[AsyncSession]

    async def on_get(self, req: Request, resp: Response) -> None:
        limit = limit_param(req)
        prefix = (req.get_param("q") or "").strip().lower()
        if not _USERNAME_PART.fullmatch(prefix):
            # No username holds anything else (spaces, '%', NUL, a 33rd character): nothing matches.
            send(resp, {"items": [], "next_cursor": None})
            return
        after = _read_cursor(req.get_param("cursor"))
        query = select(User).order_by(User.username_key).limit(limit + 1)
        if prefix:
            query = query.where(User.username_key.startswith(prefix, autoescape=True))
        if after:
            query = query.where(User.username_key > after)
        async with self.sessions() as session:
            users = list(await session.scalars(query))
        more = len(users) > limit
        users = users[:limit]
        cursor = cursors.encode(users[-1].username_key) if more else None
        send(resp, {"items": [UserOut.model_validate(u) for u in users], "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class UserById:
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis

    async def on_get(self, req: Request, resp: Response, user_id: str) -> None:
        uid = path_uuid(user_id, "user")
        async with self.sessions() as session:
            user = await session.get(User, uid)
        if user is None:
            raise NotFound("No such user.")
        online, last_seen = await presence.status(self.redis, uid)
        profile = UserProfileOut(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            created_at=user.created_at,
            online=online,
            last_seen_at=last_seen,
        )
        send(resp, profile)


def _read_cursor(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        [value] = cursors.decode(raw, 1)
        if not _USERNAME_PART.fullmatch(value):
            raise ValueError("not a username")
        return value
    except ValueError:
        raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None
