"""Models and migrations stay in step: autogenerate after `upgrade head` finds nothing to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from chat.domain.search import in_schema_comparison
from chat.infra.db import create_engine
from chat.models import Base
from tests.support.settings import make_settings, migrate


async def assert_no_difference(url: str) -> None:
    engine = create_engine(make_settings(database_url=url))

    def diff(connection: Connection) -> list[object]:
        # The search column and its index exist in Postgres only (chat/domain/search.py), on purpose.
        context = MigrationContext.configure(connection, opts={"include_object": in_schema_comparison})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as conn:
            changes = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert changes == [], f"models and migrations differ; add a migration: {changes}"


async def test_postgres_schema_matches_models(postgres_db: str) -> None:
    await assert_no_difference(postgres_db)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}"
    migrate(url)
    return url


async def test_sqlite_schema_matches_models(sqlite_url: str) -> None:
    await assert_no_difference(sqlite_url)
