"""The `worker` process: an arq worker for the message jobs, woken the moment a job is enqueued."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from chat.db import create_engine, create_sessionmaker
from chat.eventbus import RedisPublisher
from chat.jobs import wake_channel
from chat.redis import create_redis, deserialize_job, serialize_job
from chat.sequence import Sequencer
from chat.settings import Settings
from workers.batch import PersistBatcher
from workers.tasks import delete_message, edit_message, is_transient, persist_message

log = logging.getLogger("workers")

FUNCTIONS = [persist_message, edit_message, delete_message]


def make_startup(settings: Settings) -> Any:
    async def on_startup(ctx: dict[str, Any]) -> None:
        # ctx["redis"] is the worker's own arq pool; publishing shares it.
        engine = create_engine(settings)
        ctx["settings"] = settings
        ctx["engine"] = engine
        ctx["sessions"] = create_sessionmaker(engine)
        ctx["publisher"] = RedisPublisher(ctx["redis"], stream_maxlen=settings.event_stream_maxlen)
        ctx["sequencer"] = Sequencer(ctx["redis"])
        ctx["max_tries"] = settings.job_max_tries
        ctx["batcher"] = PersistBatcher(
            ctx["sessions"], ctx["publisher"], ctx["sequencer"], is_transient=is_transient
        )

    return on_startup


async def on_shutdown(ctx: dict[str, Any]) -> None:
    engine = ctx.get("engine")
    if engine is not None:
        await engine.dispose()


# KEYS[1] the queue, KEYS[2..] in-progress keys; ARGV[1] now (ms), ARGV[2] in-progress TTL (ms),
# ARGV[3..] job ids. Returns {id, score, id, score, ...} for the jobs claimed.
_CLAIM_JOBS = """
local claimed = {}
for i = 2, #KEYS do
  local id = ARGV[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    if redis.call('SET', KEYS[i], '1', 'PX', ARGV[2], 'NX') then
      table.insert(claimed, id)
      table.insert(claimed, score)
    end
  end
end
return claimed
"""


class ChatWorker(Worker):
    """arq's worker, except that it sleeps on a wake-up channel instead of a fixed poll.

    arq polls its queue every `poll_delay` (0.5 s by default), which alone would add ~250 ms to the
    average send → deliver latency. The api publishes on the wake channel after each enqueue and
    this loop re-polls at once; the poll delay stays as the fallback if a wake-up is missed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wake = asyncio.Event()
        self._claim: Any = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim every job this poll can take in one round trip (arq spends three per job).

        Same protocol as arq's: a job is ours when its in-progress key was set with NX while it is
        due in the queue, so stock arq workers and these can share one queue.
        """
        free = self.max_jobs - self.job_counter
        ids = [job_id.decode() for job_id in job_ids[: max(free, 0)]]
        if not ids:
            return
        if self._claim is None:
            self._claim = self.pool.register_script(_CLAIM_JOBS)
        keys = [self.queue_name, *(in_progress_key_prefix + job_id for job_id in ids)]
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        claimed = await self._claim(keys=keys, args=[timestamp_ms(), timeout_ms, *ids])
        for job_id, score in zip(claimed[::2], claimed[1::2], strict=True):
            await self.sem.acquire()
            self.job_counter += 1
            name = job_id.decode() if isinstance(job_id, bytes) else str(job_id)
            task = self.loop.create_task(self.run_job(name, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[name] = task

    def _release_sem_dec_counter_on_complete(self) -> None:
        starved = self.job_counter >= self.max_jobs
        super()._release_sem_dec_counter_on_complete()
        if starved:
            # Jobs may have been left in the queue while every slot was busy: look again now.
            self._wake.set()

    async def main(self) -> None:
        log.info("worker started for %s", ", ".join(self.functions))
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                self._wake.clear()
                await self._poll_iteration()
                if self.burst:
                    if 0 <= self.max_burst_jobs <= self._jobs_started():
                        await asyncio.gather(*self.tasks.values())
                        return
                    if await self.pool.zcard(self.queue_name) == 0:
                        await asyncio.gather(*self.tasks.values())
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_delay_s)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def close(self) -> None:
        # arq's close() calls redis-py's deprecated close(); same steps, with aclose().
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def _listen(self) -> None:
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(wake_channel(self.queue_name))
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away; the poll delay covers us until it is back
                log.warning("wake-up channel lost (%s); reconnecting", exc)
                await asyncio.sleep(1)


def create_worker(settings: Settings, **overrides: Any) -> ChatWorker:
    """The worker with every client built from `settings`; tests pass `burst=True` and the like."""
    options: dict[str, Any] = {
        "functions": FUNCTIONS,
        "queue_name": settings.queue_name,
        "redis_pool": create_redis(settings),
        "on_startup": make_startup(settings),
        "on_shutdown": on_shutdown,
        "max_jobs": settings.worker_max_jobs,
        "max_tries": settings.job_max_tries,
        "job_timeout": settings.job_timeout_seconds,
        "keep_result": settings.job_keep_result_seconds,
        "poll_delay": settings.worker_poll_seconds,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        "log_results": False,
    }
    options.update(overrides)
    return ChatWorker(**options)


def __getattr__(name: str) -> Any:
    # `arq workers.main.WorkerSettings` keeps working; imported lazily to avoid a cycle.
    if name == "WorkerSettings":
        from workers.arq_cli import WorkerSettings

        return WorkerSettings
    raise AttributeError(name)
