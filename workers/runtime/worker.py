"""ChatWorker: arq's worker with a loop of its own (see `chat.jobqueue` for the arq internals it
relies on). This module is the class, its start and stop (arq's `main`, `handle_sig`, `close`);
the parts it is made of, each a module a reader of arq's `worker.py` will recognise:

- `claim.py`: the main loop, claiming due jobs from every lane and queue shard (`_poll_iteration`,
  `start_jobs`);
- `run.py`: running one job (`run_job`);
- `finish.py`: writing outcomes in one MULTI/EXEC (`finish_job`, `finish_failed_job`);
- `heartbeat.py`: the heartbeat, releasing dead workers' jobs, gauges (`heart_beat`).
"""

from __future__ import annotations

import asyncio
import contextlib
from signal import Signals

from arq.connections import create_pool

from chat.infra.outage import Outage, keep_running
from chat.jobqueue import heartbeats
from workers.runtime.base import GAUGE_EVERY_BEATS, REDIS_ERRORS, log
from workers.runtime.claim import Claiming
from workers.runtime.heartbeat import Beating


class ChatWorker(Claiming, Beating):
    """arq's worker with a loop of its own: batch claims and finishes, heartbeats, self-healing.

    - Claims due jobs that no one holds, up to its free slots, in one round trip, and polls again
      at once while work is due: when a slot frees after a full claim, on every enqueue (the api
      publishes a wake-up), when a retry falls due, and as a fallback every `poll_delay`
      (every IDLE_POLL_SECONDS while wake-ups are heard).
    - Finishes every job that completed meanwhile in one MULTI/EXEC: results, the events the jobs
      staged in their `outbox`, re-queued retries and dead letters, written together or not at all.
    - Beats a heartbeat record, and releases the jobs of workers whose record expired.
    - Rides out Redis outages, and Redis refusing writes (out of memory): it backs off, logs the
      outage once, keeps finished results until they can be written, and carries on by itself;
      its background loops (heartbeat, reaping, gauges, wake-ups) never end before it stops.
    - `lanes`: more queues to serve, each with slots of its own (`{queue name: slots}`), so that
      jobs that wait on someone else (webhook deliveries) never take the slots of `queue_name`'s.
    """

    # -- lifecycle ---------------------------------------------------------------------------------

    async def main(self) -> None:
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        self._lay_out()
        log.info(
            "worker %s started for %s on queue shards %s",
            self.worker_id,
            ", ".join(self.functions),
            ",".join(map(str, self.served)),
        )
        self.ctx["redis"] = self.pool
        self.ctx["worker_id"] = self.worker_id
        if self.on_startup:
            await self.on_startup(self.ctx)
        # Each loop keeps running whatever Redis answers (chat.infra.outage.keep_running), and logs its
        # own failures: a full Redis must not stop the heartbeat for good.
        every = self._heartbeat_s
        loops = {
            "worker-wake": (self._listen, 1.0, self._wake_outage),
            "worker-heartbeat": (self._beat, every, Outage(log, "Redis (the worker's heartbeat)")),
            "worker-reap": (self._reap, every, Outage(log, "Redis (releasing dead workers' jobs)")),
            "worker-gauges": (self._gauges, every * GAUGE_EVERY_BEATS, Outage(log, "Redis (queue gauges)")),
        }
        background = [
            asyncio.create_task(keep_running(step, seconds, outage), name=name)
            for name, (step, seconds, outage) in loops.items()
        ]
        cancelled = False
        try:
            await self._loop()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            await self._stop_jobs(grace=0 if cancelled else self._grace_s)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(*REDIS_ERRORS):
                await heartbeats.deregister(self.pool, self.worker_id, self._tags)

    def handle_sig(self, signum: Signals) -> None:
        # Stop claiming and let running jobs finish within the grace period; arq would cancel them.
        log.info("worker %s stopping on %s with %d jobs running", self.worker_id, signum, len(self._running))
        self._stopping = True
        self._wake.set()
        if self.on_stop:
            self.on_stop(signum)

    async def close(self) -> None:
        if not self._pool:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(*REDIS_ERRORS):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        for node in self._nodes.values():
            with contextlib.suppress(*REDIS_ERRORS):
                await node.aclose()
        self._nodes.clear()
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None
