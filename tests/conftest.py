"""Fixtures shared by every test package: settings, a migrated Postgres database, Redis, the api."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from falcon.testing import ASGIConductor

from api.app import build_deps, create_app
from api.deps import Deps
from chat.infra.redisclient import create_redis, is_cluster
from chat.settings import Settings
from tests.support import ApiClient, services
from tests.support.rediscluster import RedisClusterProcess
from tests.support.s3 import S3Server, moto_s3
from tests.support.settings import EMPTY_TABLES, RunWorker, make_settings, migrated_database
from workers.main import create_worker


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    with migrated_database() as url:
        yield url


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server, for the tests that put attachments in S3 (the rest use local disk)."""
    with moto_s3() as server:
        yield server


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
            await conn.execute(EMPTY_TABLES)
        finally:
            await conn.close()

    asyncio.run(truncate())
    services.flush_redis()
    yield make_settings(database_url=postgres_db, redis_url=redis_url)


@pytest.fixture
async def deps(settings: Settings) -> AsyncIterator[Deps]:
    deps = build_deps(settings)
    yield deps
    await deps.aclose()


@pytest.fixture
async def api(deps: Deps) -> AsyncIterator[ApiClient]:
    """The real ASGI api (lifespan included) over real Postgres and Redis."""
    app = create_app(deps.settings, deps)
    async with ASGIConductor(app) as conductor:
        yield ApiClient(conductor)


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


# A Redis Cluster of its own for a test module (3 masters, a replica each), and the product's client of it.
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    started = RedisClusterProcess(tmp_path_factory.mktemp("cluster"))
    yield started
    started.stop()


@pytest.fixture
async def cluster_client(cluster: RedisClusterProcess) -> AsyncIterator[Any]:
    cluster.flush()
    made: Any = create_redis(make_settings(redis_url=cluster.url, redis_mode="cluster"))
    assert is_cluster(made)
    # A client's first connection to a master runs the restart-epoch check's own EVALs
    # (chat.infra.restarts): opened here, they stay out of the counts the tests take.
    await made.ping(target_nodes=made.PRIMARIES)
    yield made
    await made.aclose()
