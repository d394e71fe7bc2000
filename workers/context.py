"""What a job function finds in its context: arq's per-job keys, ChatWorker's, and on_startup's."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TypedDict

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from chat.domain.webhooks import Dispatcher
from chat.infra.outage import Outages
from chat.infra.storage import Storage
from chat.jobqueue.connection import ArqRedis
from chat.jobqueue.outbox import Outbox
from chat.realtime.eventbus import RedisPublisher
from chat.settings import Settings
from workers.batch import PersistBatcher


class JobContext(TypedDict, total=False):
    # arq, per worker and per job.
    redis: ArqRedis
    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
    # ChatWorker's: the commands a job stages for its finishing transaction, and who runs it.
    outbox: Outbox
    worker_id: str
    # on_startup (workers.main).
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    publisher: RedisPublisher
    storage: Storage
    max_tries: int
    batcher: PersistBatcher
    outages: Outages
    webhooks: Dispatcher  # the webhook registry and dispatch
    http: httpx.AsyncClient  # webhook deliveries' client: one pool per worker
    sweeper: asyncio.Task[None]  # deletes the bytes of discarded uploads (workers.sweeper)
