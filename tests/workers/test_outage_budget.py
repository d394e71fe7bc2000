"""A dependency that is away spends no tries: the job waits, bounded by JOB_OUTAGE_MAX_SECONDS.
A job's own failure still spends them (JOB_MAX_TRIES)."""

from __future__ import annotations

from typing import Any

import pytest

from api.deps import Deps
from chat.domain import attachments
from chat.jobqueue import deadletters
from tests.support import ApiClient
from tests.support.messages import send
from tests.support.settings import RunWorker
from workers import store


async def test_an_outage_spends_no_tries_and_is_bounded_by_time(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _, cid = await api.pair()
    calls = 0

    async def away(*args: Any) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("connect call failed ('127.0.0.1', 5432)")

    monkeypatch.setattr(store, "persist_batch", away)
    sent = await send(api, alice, cid, "stored once Postgres is back")
    await run_worker(max_tries=2, outage_max_seconds=1.0, outage_retry_max_seconds=0.05)

    # Tried far more often than its two tries, each given back, until it was a second old.
    assert calls > 4
    [entry] = (await deadletters.page(deps.redis, limit=10))[0]
    assert entry["job_id"] == sent["job_id"]
    assert entry["reason"] == "outage"
    assert entry["tries"] == 1
    assert "the database was unavailable" in entry["error"]


async def test_a_jobs_own_failure_still_spends_its_tries(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _, cid = await api.pair()
    calls = 0

    async def missing(*args: Any) -> None:
        nonlocal calls
        calls += 1
        raise attachments.NotUploaded("the store does not hold it")  # retried, but not an outage

    monkeypatch.setattr(store, "persist_batch", missing)
    sent = await send(api, alice, cid, "never stored")
    await run_worker(max_tries=2)

    assert calls == 2
    [entry] = (await deadletters.page(deps.redis, limit=10))[0]
    assert (entry["job_id"], entry["reason"]) == (sent["job_id"], "max_tries")
