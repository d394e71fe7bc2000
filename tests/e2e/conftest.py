"""Fixtures for the e2e tier: a migrated database and the Procfile's processes (tests/support/stack.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import services
from tests.support.browser import browser  # noqa: F401  (the fixture, for every browser test)
from tests.support.settings import migrated_database, migrated_private_postgres
from tests.support.stack import E2E_REDIS_URL, Client, Process, Stack, stack_env

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything here starts real processes: the e2e tier (make e2e), never the fast one (make test).
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def e2e_database() -> Iterator[str]:
    with migrated_database() as url:
        yield url


@pytest.fixture(scope="module")
def stack(e2e_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    services.check_redis()
    services.flush_redis(E2E_REDIS_URL)
    stack = Stack(stack_env(e2e_database), tmp_path_factory.mktemp("logs"))
    yield stack
    stack.stop_all()


@pytest.fixture
async def client(web: Process) -> AsyncIterator[Client]:
    """A REST client of the web process that the module's `web` fixture gives."""
    client = Client(web.url)
    yield client
    await client.aclose()


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.PrivateRedis]:
    """A redis-server of the test's own, with AOF on, to break."""
    server = services.private_redis(str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def own_postgres() -> Iterator[services.PrivatePostgres]:
    """A PostgreSQL cluster of the test's own, at the migrations' head, to stop and start."""
    with migrated_private_postgres() as server:
        yield server
