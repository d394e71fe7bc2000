"""Postgres restarted: every connection the pools held before is dead. The first requests after it
must not be the ones that find out (a 503 on an admin read 40 s after Postgres was back)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from chat.cli import set_admin
from chat.jobqueue.state import job_state
from chat.settings import Settings
from tests.support import ApiClient, services
from tests.support.apps import api_with
from tests.support.messages import send
from tests.support.services import PrivatePostgres
from tests.support.settings import make_settings, migrated_private_postgres
from workers.main import create_worker

WARM = 4  # requests in flight at once before the restart: the pool holds this many connections


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    with migrated_private_postgres() as server:
        yield server


@pytest.fixture
def settings(postgres: PrivatePostgres, redis_url: str) -> Settings:
    services.flush_redis()
    return make_settings(database_url=postgres.url, redis_url=redis_url)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[ApiClient]:
    async with api_with(settings) as client:
        yield client


async def test_the_first_reads_after_a_restart_of_postgres_answer(
    api: ApiClient, settings: Settings, postgres: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await api.user()
    assert await set_admin(settings, admin.username, True)
    alice, _, cid = await api.pair()
    history = f"/conversations/{cid}/messages"
    for _ in range(2):  # several connections pooled, each used
        answers = await asyncio.gather(
            *(api.get("/admin/webhooks", admin) for _ in range(WARM)),
            *(api.get(history, alice) for _ in range(WARM)),
        )
        assert {a.status_code for a in answers} == {200}

    await asyncio.to_thread(postgres.restart)
    caplog.set_level(logging.WARNING)

    first_admin = await api.get("/admin/webhooks", admin)
    assert first_admin.status_code == 200, first_admin.text
    first_history = await api.get(history, alice)
    assert first_history.status_code == 200, first_history.text
    # And every pooled connection after them, not only the first.
    answers = await asyncio.gather(*(api.get(history, alice) for _ in range(2 * WARM)))
    assert [a.status_code for a in answers] == [200] * (2 * WARM)
    # Nothing met a dead connection on the way (the api's user check rides out an outage by
    # itself, and would hide one from the status codes).
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()], caplog.text


async def test_a_worker_stores_on_the_first_try_after_a_restart_of_postgres(
    api: ApiClient, settings: Settings, postgres: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch write speaks asyncpg on a pooled connection: it must get a live one too."""
    alice, _, cid = await api.pair()
    worker = create_worker(settings, handle_signals=False, poll_delay=0.05)
    task = asyncio.create_task(worker.main())
    try:

        async def stored(body: str) -> int:
            sent = await send(api, alice, cid, body)
            async with asyncio.timeout(20):
                while (state := await job_state(worker.pool, settings.queue_name, sent["job_id"])).status != (
                    "complete"
                ):
                    await asyncio.sleep(0.02)
            return state.tries

        for n in range(3):
            assert await stored(f"before {n}") == 1
        await asyncio.to_thread(postgres.restart)
        caplog.clear()
        caplog.set_level(logging.WARNING)
        assert await stored("after") == 1
        assert not [r for r in caplog.records if "unreachable" in r.getMessage()], caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()
