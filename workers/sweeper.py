"""The uploads sweep: one worker at a time, every UPLOAD_SWEEP_SECONDS, deletes the bytes of
discarded uploads (`chat.domain.attachments.sweep`). It runs beside the jobs in each worker process; a
Redis key taken with SET NX lets only the first worker of each interval do it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.domain import attachments
from chat.infra.failures import is_transient, scrubbed_traceback, unavailable_reason
from chat.infra.storage import Storage, StorageUnavailable
from chat.settings import Settings

log = logging.getLogger("workers.sweeper")

LOCK_KEY = "chat:uploads:sweep"
BATCH = 200
# Api hosts sign upload URLs by their own clocks: a minute's grace before one counts as expired.
CLOCK_SKEW_SECONDS = 60


async def sweep_once(
    redis: Redis, sessions: async_sessionmaker[AsyncSession], storage: Storage, settings: Settings
) -> int | None:
    """Sweep if no other worker did within the interval: how many uploads went, or None (skipped)."""
    interval_ms = max(1, int(settings.upload_sweep_seconds * 1000))
    if not await redis.set(LOCK_KEY, "1", nx=True, px=interval_ms):
        return None
    gone = 0
    url_seconds = settings.upload_url_expire_seconds + CLOCK_SKEW_SECONDS
    while True:
        now = datetime.now(UTC)
        swept = await attachments.sweep(
            sessions,
            storage,
            now=now,
            unsent_before=now - timedelta(seconds=settings.upload_unsent_ttl_seconds),
            urls_expired_before=now - timedelta(seconds=url_seconds),
            limit=BATCH,
        )
        gone += swept
        if swept < BATCH:
            break
    if gone:
        log.info("deleted the files of %d discarded uploads", gone)
    return gone


async def sweep_forever(
    redis: Redis, sessions: async_sessionmaker[AsyncSession], storage: Storage, settings: Settings
) -> None:
    while True:
        # An interval after start, not at once: workers restarting together sweep no more often.
        await asyncio.sleep(settings.upload_sweep_seconds)
        try:
            await sweep_once(redis, sessions, storage, settings)
        except StorageUnavailable as exc:
            log.warning("uploads sweep: %s; the next sweep tries again", exc)
        except Exception as exc:
            if is_transient(exc):
                log.warning("uploads sweep: %s; the next sweep tries again", unavailable_reason(exc))
            else:  # a defect: said loudly, and the worker's jobs carry on
                log.error("uploads sweep failed; the next sweep tries again\n%s", scrubbed_traceback(exc))
