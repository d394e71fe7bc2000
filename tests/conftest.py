"""Fixtures shared by every test package: settings, a migrated Postgres database, Redis, the api."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from alembic.config import Config
from falcon.testing import ASGIConductor

from alembic import command
from api.app import build_deps, create_app
from api.deps import Deps
from chat.settings import Settings
from tests import services
from tests.support import ApiClient
from workers.main import create_worker

TABLES = "messages, participants, conversations, refresh_tokens, users"


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "environment": "test",
        "secret_key": "test-secret-key-" + "x" * 32,
        # Cheap Argon2 parameters: the tests exercise the flow, not the cost.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        # Every test registers and logs in users from one address and sends in bursts; the rate
        # limit tests set these back to what they test.
        "rate_limit_register_per_address": "off",
        "rate_limit_login_per_address": "off",
        "rate_limit_sends_per_user": "off",
    }
    base.update(overrides)
    return Settings(**base)


def migrate(database_url: str) -> None:
    config = Config("alembic.ini")
    config.attributes["settings"] = make_settings(database_url=database_url)
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


@contextlib.contextmanager
def migrated_database() -> Iterator[str]:
    """A new database at the migrations' head, dropped afterwards; its asyncpg URL."""
    name = services.create_database()
    try:
        url = services.database_url(name)
        migrate(url)
        yield url
    finally:
        services.drop_database(name)


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    with migrated_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    services.check_redis()
    return services.REDIS_URL


@pytest.fixture
def settings(postgres_db: str, redis_url: str) -> Iterator[Settings]:
    """Settings for real Postgres and Redis, both emptied before the test."""
    import asyncio

    import asyncpg

    async def truncate() -> None:
        conn = await asyncpg.connect(services.database_url(postgres_db.rsplit("/", 1)[1], "postgresql"))
        try:
            await conn.execute(f"TRUNCATE {TABLES} CASCADE")
        finally:
            await conn.close()

    asyncio.run(truncate())
    services.flush_redis()
    yield make_settings(database_url=postgres_db, redis_url=redis_url)


@pytest.fixture
async def deps(settings: Settings) -> AsyncIterator[Deps]:
    deps = build_deps(settings)
    yield deps
    await deps.redis.aclose(close_connection_pool=True)
    await deps.engine.dispose()


@pytest.fixture
async def api(deps: Deps) -> AsyncIterator[ApiClient]:
    """The real ASGI api (lifespan included) over real Postgres and Redis."""
    app = create_app(deps.settings, deps)
    async with ASGIConductor(app) as conductor:
        yield ApiClient(conductor)


RunWorker = Callable[..., Awaitable[int]]


@pytest.fixture
def run_worker(settings: Settings) -> RunWorker:
    """Drain the queue with a real worker in burst mode; returns the number of jobs completed."""

    async def run(**overrides: Any) -> int:
        worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01, **overrides)
        try:
            await worker.main()
        finally:
            await worker.close()
        completed: int = worker.jobs_complete
        return completed

    return run


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]
