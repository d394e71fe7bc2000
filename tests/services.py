"""Real Postgres and Redis for the tests: a fresh database per run, failing (not skipping) under CI."""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, error: BaseException) -> None:
    message = f"{what} is not reachable ({error}); start it (see README: Running the tests)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def database_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    parts = urlsplit(POSTGRES_ADMIN_URL)
    return urlunsplit((driver, parts.netloc, f"/{name}", "", ""))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database() -> str:
    """Create an empty database of its own for this test run; returns its name."""
    name = f"chat_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", exc)
    return name


def drop_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def check_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()


def flush_redis() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()
