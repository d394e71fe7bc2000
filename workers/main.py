"""The `worker` process: ChatWorker (see `chat.arqseam`) over the message jobs, and in slots of
their own the webhook deliveries (`chat.queues`).

`worker_options(settings)` is the one place that turns settings into worker options, for
`python -m workers` (the Procfile's line) and for arq's own command line alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
from arq.connections import RedisSettings
from arq.worker import func

from chat.arqseam import ChatWorker, deserialize, serialize
from chat.db import create_engine, create_sessionmaker
from chat.eventbus import RedisPublisher
from chat.failures import is_transient
from chat.outage import Outages
from chat.process import withhold_job_args
from chat.redis import create_redis
from chat.sequence import Sequencer
from chat.settings import Settings
from chat.storage import create_storage
from chat.webhooks import create_dispatcher
from workers.batch import PersistBatcher
from workers.context import JobContext
from workers.sweeper import sweep_forever
from workers.tasks import delete_message, edit_message, persist_message, react
from workers.webhooks import deliver_webhook

FUNCTIONS = [persist_message, edit_message, delete_message, react, deliver_webhook]


def functions(settings: Settings) -> list[Any]:
    """FUNCTIONS, with the webhook delivery's own tries and a timeout above its request's."""
    # cast: arq types a job's ctx as a plain dict, ours is the JobContext TypedDict.
    webhook = func(
        cast(Any, deliver_webhook),
        max_tries=settings.webhook_max_tries,
        timeout=settings.webhook_timeout_seconds + 5,
    )
    return [webhook if f is deliver_webhook else f for f in FUNCTIONS]


def make_startup(settings: Settings) -> Callable[[JobContext], Awaitable[None]]:
    async def on_startup(ctx: JobContext) -> None:
        # Here, not only in configure_logging: arq's own command line never calls that.
        withhold_job_args()
        # ctx["redis"] is the worker's own arq pool; publishing shares it.
        engine = create_engine(settings)
        ctx["settings"] = settings
        ctx["engine"] = engine
        ctx["sessions"] = create_sessionmaker(engine)
        ctx["publisher"] = RedisPublisher(ctx["redis"], stream_maxlen=settings.event_stream_maxlen)
        ctx["storage"] = create_storage(settings)
        ctx["max_tries"] = settings.job_max_tries
        ctx["outages"] = Outages(logging.getLogger("workers.tasks"))
        ctx["dead_letter_limits"] = dead_letter_limits(settings)
        ctx["webhooks"] = create_dispatcher(
            ctx["redis"],
            ctx["sessions"],
            queue_name=settings.webhook_queue_name,
            refresh_seconds=settings.webhook_registry_refresh_seconds,
        )
        # One client, and so one connection pool, for every delivery this worker makes.
        ctx["http"] = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            headers={"User-Agent": "headless-chat-webhooks"},
        )
        ctx["sweeper"] = asyncio.create_task(
            sweep_forever(ctx["redis"], ctx["sessions"], ctx["storage"], settings), name="uploads-sweep"
        )
        ctx["batcher"] = PersistBatcher(
            ctx["sessions"],
            Sequencer(ctx["redis"]),
            is_transient=is_transient,
            timeout_seconds=settings.job_timeout_seconds,
        )

    return on_startup


async def on_shutdown(ctx: JobContext) -> None:
    sweeper = ctx.get("sweeper")
    if sweeper is not None:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
    batcher = ctx.get("batcher")
    if batcher is not None:
        await batcher.close()
    http = ctx.get("http")
    if http is not None:
        await http.aclose()
    engine = ctx.get("engine")
    if engine is not None:
        await engine.dispose()


def dead_letter_limits(settings: Settings) -> tuple[int, float]:
    return settings.dead_letter_max_count, settings.dead_letter_max_age_days * 86400


def worker_options(settings: Settings) -> dict[str, Any]:
    """The options arq's own Worker takes, from settings."""
    return {
        "functions": functions(settings),
        "queue_name": settings.queue_name,
        "on_startup": make_startup(settings),
        "on_shutdown": on_shutdown,
        "max_jobs": settings.worker_max_jobs,
        "max_tries": settings.job_max_tries,
        "job_timeout": settings.job_timeout_seconds,
        "keep_result": settings.job_keep_result_seconds,
        "poll_delay": settings.worker_poll_seconds,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "log_results": False,
    }


def create_worker(settings: Settings, **overrides: Any) -> ChatWorker:
    """The worker with every client built from `settings`; tests pass `burst=True` and the like."""
    limit, age = dead_letter_limits(settings)
    options: dict[str, Any] = {
        **worker_options(settings),
        "redis_pool": create_redis(settings),
        "heartbeat_seconds": settings.worker_heartbeat_seconds,
        "heartbeat_ttl_seconds": settings.worker_heartbeat_ttl_seconds,
        "shutdown_grace_seconds": settings.worker_shutdown_grace_seconds,
        "dead_letter_max_count": limit,
        "dead_letter_max_age_seconds": age,
        "lanes": {settings.webhook_queue_name: settings.webhook_max_jobs},
        "outage_max_seconds": settings.job_outage_max_seconds,
        "outage_retry_max_seconds": settings.job_outage_retry_max_seconds,
    }
    options.update(overrides)
    return ChatWorker(**options)


def arq_cli_settings(settings: Settings) -> dict[str, Any]:
    """`arq workers.main.WorkerSettings`: the stock arq worker, with the same options as ours."""
    url = settings.redis_url
    # memory:// lives inside one process (dev mode), which arq's CLI cannot join: arq's default
    # address stands in, so resolving the settings works and only running the worker fails.
    redis = RedisSettings() if url.startswith("memory://") else RedisSettings.from_dsn(url)
    return {**worker_options(settings), "redis_settings": redis}


def arq_cli_webhook_settings(settings: Settings) -> dict[str, Any]:
    """`arq workers.main.WebhookWorkerSettings`: the stock arq worker for webhook deliveries,
    which ChatWorker serves beside the messages (arq's worker takes one queue)."""
    return {
        **arq_cli_settings(settings),
        "queue_name": settings.webhook_queue_name,
        "max_jobs": settings.webhook_max_jobs,
    }


def __getattr__(name: str) -> Any:
    # Built when arq's CLI asks for it, not at import: settings come from the environment then.
    if name == "WorkerSettings":
        return arq_cli_settings(Settings())
    if name == "WebhookWorkerSettings":
        return arq_cli_webhook_settings(Settings())
    raise AttributeError(name)
