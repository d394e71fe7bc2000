"""The `worker` process: ChatWorker (`workers.runtime`) over the message jobs, and in slots of
their own the webhook deliveries (`chat.jobqueue.lanes`).

`create_worker(settings)` is the one place that turns settings into a worker, for
`python -m workers` (the Procfile's line), the dev server and tests. arq's own command line
(`arq workers.main.WorkerSettings`) is refused at start: its worker lacks what ChatWorker does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx

from chat.domain.sequence import Sequencer
from chat.domain.webhooks import create_dispatcher
from chat.infra import tracing
from chat.infra.db import create_engine, create_sessionmaker
from chat.infra.failures import is_transient
from chat.infra.outage import Outages
from chat.infra.process import withhold_job_args
from chat.infra.redisclient import create_redis
from chat.infra.stores import create_storage
from chat.jobqueue.codec import deserialize, serialize
from chat.jobqueue.shards import Shards
from chat.realtime.eventbus import RedisPublisher
from chat.settings import Settings
from workers.batch import PersistBatcher
from workers.context import JobContext
from workers.erase import erase_user
from workers.runtime import ChatWorker, func
from workers.sweeper import sweep_forever
from workers.tasks import delete_message, edit_message, persist_message, react
from workers.webhooks import deliver_webhook

FUNCTIONS = [persist_message, edit_message, delete_message, react, erase_user, deliver_webhook]


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
        # Also in configure_logging; here for a worker that is made without it (tests, the dev server).
        withhold_job_args()
        # ctx["redis"] is the worker's own arq pool; publishing shares it.
        engine = create_engine(settings)
        ctx["settings"] = settings
        ctx["engine"] = engine
        ctx["sessions"] = create_sessionmaker(engine)
        ctx["publisher"] = RedisPublisher.from_settings(ctx["redis"], settings)
        ctx["storage"] = create_storage(settings)
        ctx["max_tries"] = settings.job_max_tries
        ctx["outages"] = Outages(logging.getLogger("workers.tasks"))
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
    """The options of arq's Worker that ChatWorker takes too, from settings."""
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
    tracing.setup("worker")
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
        "shards": Shards.from_settings(settings).worker_shards(settings),
    }
    options.update(overrides)
    return ChatWorker(**options)


# Said by `arq workers.main.WorkerSettings` (or `WebhookWorkerSettings`) before it exits.
STOCK_WORKER_REFUSED = (
    "arq's own worker is not supported: it lacks the worker heartbeats, the webhook lane, the "
    "outage rule and the dead letters. Run `python -m workers` (the Procfile's worker line) instead."
)


def __getattr__(name: str) -> Any:
    # arq's command line asks for these names: it stops at start, with the command to run instead.
    if name in ("WorkerSettings", "WebhookWorkerSettings"):
        raise SystemExit(STOCK_WORKER_REFUSED)
    raise AttributeError(name)
