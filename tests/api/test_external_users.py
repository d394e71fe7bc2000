"""ensure_user on the dev mode's SQLite: the same upsert as on Postgres (ON CONFLICT on external_id).
Concurrent first calls are tested on Postgres (tests/api/test_app_tokens.py): the in-memory SQLite
here is one shared connection, which cannot run two transactions at once."""

from __future__ import annotations

from chat.usecases.external_users import ensure_user, fallback_username
from tests.support.sqlite import sqlite_world


async def test_ensure_user_makes_then_updates_one_user_on_sqlite() -> None:
    async with sqlite_world() as world:
        made, created = await ensure_user(
            world.sessions, external_id="app-1", display_name="One", username="first_one"
        )
        assert created and made.username == "first_one" and made.password_hash is None
        again, created = await ensure_user(
            world.sessions, external_id="app-1", display_name="Renamed", username="ignored", metadata={"a": 1}
        )
        assert not created and again.id == made.id
        assert (again.display_name, again.username, again.app_metadata) == ("Renamed", "first_one", {"a": 1})
        # The wanted name is taken (case-insensitively): u_ and the first 12 hex digits of the id.
        other, _ = await ensure_user(
            world.sessions, external_id="app-2", display_name=None, username="FIRST_ONE"
        )
        assert other.username == fallback_username(other.id) and other.display_name == other.username
