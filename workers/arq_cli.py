"""`arq workers.main.WorkerSettings` (or `workers.arq_cli`): the stock arq worker over the same jobs.

The Procfile runs `python -m workers` (ChatWorker, woken by each enqueue); this module exists for
operators who prefer arq's own command line and its flags (`--check`, `--watch`, `--burst`).
It reads REDIS_URL when imported, because arq's CLI wants the connection as a class attribute.
"""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings

from chat.redis import deserialize_job, serialize_job
from chat.settings import Settings
from workers.main import FUNCTIONS, make_startup, on_shutdown


def _redis_settings(url: str) -> RedisSettings:
    # memory:// lives inside one process (dev mode), which arq's CLI cannot join; importing this
    # module must still work there, so it falls back to arq's default and fails only if run.
    return RedisSettings() if url.startswith("memory://") else RedisSettings.from_dsn(url)


class WorkerSettings:
    functions = FUNCTIONS
    on_shutdown = on_shutdown
    job_serializer = serialize_job
    job_deserializer = deserialize_job
    redis_settings = _redis_settings(os.environ.get("REDIS_URL", "redis://localhost:6379"))
    queue_name = os.environ.get("QUEUE_NAME", "arq:queue")
    max_tries = 12
    max_jobs = 50
    poll_delay = 0.05

    @staticmethod
    async def on_startup(ctx: dict[str, Any]) -> None:
        await make_startup(Settings())(ctx)
