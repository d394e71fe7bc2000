"""The server API as tests call it: a server key (stored as `headless-chat server-keys create`
stores one: its SHA-256 only), and users the app names by its own ids."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime

from sqlalchemy import update

from api.deps import Deps
from chat.models import ServerKey, User
from tests.support import ApiClient, TestUser


async def server_key(deps: Deps, name: str | None = None) -> TestUser:
    """A new server key, as a caller whose bearer token it is."""
    key = f"sk_{secrets.token_urlsafe(32)}"
    async with deps.sessions() as session:
        session.add(
            ServerKey(
                id=uuid.uuid4(),
                name=name or f"test-{uuid.uuid4().hex[:8]}",
                key_hash=hashlib.sha256(key.encode()).hexdigest(),
                created_at=datetime.now(UTC),
            )
        )
        await session.commit()
    return TestUser(id="server", username="server", access_token=key, refresh_token="")


async def app_user(api: ApiClient, deps: Deps, external_id: str) -> TestUser:
    """A user the app calls `external_id` (who can also log in, to read as that user)."""
    user = await api.user()
    async with deps.sessions() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(user.id)).values(external_id=external_id)
        )
        await session.commit()
    return user
