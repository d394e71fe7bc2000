"""The users an app's backend vouches for, named by the app's own id (`users.external_id`): made
on first sight (an app token's first use, `PUT /server/users/{id}`, `POST /server/tokens`) and
kept up to date after.

`ensure_user` is an upsert on `external_id` (INSERT … ON CONFLICT (external_id) DO UPDATE, on
Postgres and on SQLite), so two first requests at once make one user. They have no password:
`password_hash` stays NULL, and a password login as them is a 401 like any wrong password.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.infra.db import Sessions, upsert_insert
from chat.models import User

USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}\Z")
DISPLAY_NAME_MAX = 64
# A username race (another user took the wanted name between the check and the insert) tries again.
ATTEMPTS = 3


def fallback_username(user_id: uuid.UUID) -> str:
    """`u_` and the first 12 hex digits of the user's id: the username when none is given or free."""
    return f"u_{user_id.hex[:12]}"


async def ensure_user(
    sessions: Sessions,
    *,
    external_id: str,
    display_name: str | None,
    username: str | None,
    metadata: dict[str, Any] | None = None,
) -> tuple[User, bool]:
    """The user the app calls `external_id`, made when new; and whether it was made.

    `username` is wanted only when the user is made (it is kept when valid and free in any case);
    `display_name` and `metadata`, when given, replace what the user has.
    """
    for attempt in range(ATTEMPTS):
        async with sessions() as session:
            try:
                found = await by_external_id(session, external_id)
                if found is not None:
                    user = await _update(session, found, display_name, metadata)
                    created = False
                else:
                    user, created = await _upsert(session, external_id, display_name, username, metadata)
                await session.commit()
                return user, created
            except IntegrityError:
                # The wanted username went to someone else meanwhile, or the same user's other
                # first request won on a second unique index: look again.
                if attempt == ATTEMPTS - 1:
                    raise
    raise AssertionError("unreachable")


async def by_external_id(session: AsyncSession, external_id: str) -> User | None:
    """The user the app calls `external_id`, or None."""
    found: User | None = await session.scalar(select(User).where(User.external_id == external_id))
    return found


async def _update(
    session: AsyncSession, user: User, display_name: str | None, metadata: dict[str, Any] | None
) -> User:
    # Only what changed is written: steady traffic of unchanged tokens writes nothing.
    if display_name is not None and user.display_name != display_name[:DISPLAY_NAME_MAX]:
        user.display_name = display_name[:DISPLAY_NAME_MAX]
    if metadata is not None and user.app_metadata != metadata:
        user.app_metadata = metadata
    await session.flush()
    return user


async def _upsert(
    session: AsyncSession,
    external_id: str,
    display_name: str | None,
    username: str | None,
    metadata: dict[str, Any] | None,
) -> tuple[User, bool]:
    user_id = uuid.uuid4()
    name = await _free_username(session, username) or fallback_username(user_id)
    values: dict[str, Any] = {
        "id": user_id,
        "username": name,
        "username_key": name.lower(),
        "display_name": (display_name or name)[:DISPLAY_NAME_MAX],
        "password_hash": None,
        "is_admin": False,
        "created_at": datetime.now(UTC),
        "external_id": external_id,
        "app_metadata": metadata,
    }
    insert = upsert_insert(session)(User).values(values)
    # A concurrent first request inserted it first: take that row, with what this one says.
    changes: dict[Any, Any] = {User.external_id: insert.excluded.external_id}
    if display_name is not None:
        changes[User.display_name] = insert.excluded.display_name
    if metadata is not None:
        changes[User.app_metadata] = insert.excluded["metadata"]
    statement = insert.on_conflict_do_update(index_elements=[User.external_id], set_=changes).returning(User)
    result = await session.scalars(statement, execution_options={"populate_existing": True})
    user = result.one()
    return user, user.id == user_id


async def _free_username(session: AsyncSession, wanted: str | None) -> str | None:
    if wanted is None or not USERNAME.match(wanted):
        return None
    taken = await session.scalar(select(User.id).where(User.username_key == wanted.lower()))
    return wanted if taken is None else None
