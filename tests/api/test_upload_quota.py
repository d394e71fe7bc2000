"""UPLOAD_BYTES_PER_USER_PER_DAY: the bytes one user may announce at `POST /uploads` per day,
counted atomically in Redis by the declared size, so a concurrent burst cannot overshoot it; past
it, `429` with `Retry-After` (until the day's window ends)."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from chat.domain.quota import ByteQuota
from chat.infra.redisclient import create_redis
from chat.settings import Settings
from tests.support import ApiClient, assert_problem
from tests.support.settings import make_settings

QUOTA = 1000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"upload_bytes_per_user_per_day": QUOTA})


def announce(size: int) -> dict[str, object]:
    return {"filename": "f.bin", "content_type": "application/octet-stream", "size": size}


async def test_a_burst_never_exceeds_the_quota_then_429(api: ApiClient) -> None:
    alice, bob = await api.user(), await api.user()
    sizes = [90, 130, 70, 210, 50, 160, 120, 80, 300, 40, 110, 60] * 2
    results = await asyncio.gather(*(api.post("/uploads", alice, json=announce(s)) for s in sizes))
    accepted = [s for s, r in zip(sizes, results, strict=True) if r.status_code == 201]
    refused = [r for r in results if r.status_code != 201]
    assert sum(accepted) <= QUOTA
    assert sum(accepted) > QUOTA - max(sizes)  # it filled up, rather than refusing early
    assert refused
    for result in refused:
        assert_problem(result, 429)
        assert 1 <= int(result.headers["retry-after"]) <= 86400
    # What is left cannot take even a file that would just overshoot it.
    over = QUOTA - sum(accepted) + 1
    assert_problem(await api.post("/uploads", alice, json=announce(over)), 429)
    if QUOTA - sum(accepted) > 0:
        assert (await api.post("/uploads", alice, json=announce(QUOTA - sum(accepted)))).status_code == 201
    # Per user: bob still has all of his.
    assert (await api.post("/uploads", bob, json=announce(QUOTA))).status_code == 201
    assert_problem(await api.post("/uploads", bob, json=announce(1)), 429)


async def test_invalid_announcements_cost_nothing(api: ApiClient) -> None:
    alice = await api.user()
    assert_problem(await api.post("/uploads", alice, json=announce(0)), 422)
    assert_problem(await api.post("/uploads", alice, json={**announce(QUOTA), "filename": ""}), 422)
    assert (await api.post("/uploads", alice, json=announce(QUOTA))).status_code == 201


async def test_the_window_is_a_day_and_off_counts_nothing() -> None:
    redis = create_redis(make_settings(redis_url="memory://quota-test"))
    try:
        quota = ByteQuota(redis, 100)
        now = 86400 * 20_000 + 86000.0  # 400 s before a UTC midnight
        assert (await quota.take("u", 60, now=now)).allowed
        refused = await quota.take("u", 41, now=now)
        assert not refused.allowed and refused.retry_after == 400
        assert (await quota.take("u", 40, now=now)).allowed
        assert (await quota.take("u", 100, now=now + 400)).allowed  # the next day
        for off in (None, 0):
            unlimited = ByteQuota(redis, off)
            for _ in range(3):
                assert (await unlimited.take("v", 10**12, now=time.time())).allowed
    finally:
        await redis.aclose()


@pytest.mark.parametrize(("raw", "value"), [("off", None), ("OFF", None), ("0", None), ("5000", 5000)])
def test_the_setting_reads_off_and_zero_as_no_quota(raw: str, value: int | None) -> None:
    assert make_settings(upload_bytes_per_user_per_day=raw).upload_bytes_per_user_per_day == value


def test_the_setting_refuses_nonsense() -> None:
    for raw in ("-1", "lots", "1.5"):
        with pytest.raises(ValidationError):
            make_settings(upload_bytes_per_user_per_day=raw)
    assert Settings.model_fields["upload_bytes_per_user_per_day"].default == 1024**3
