"""The heartbeat (arq's `heart_beat` and `record_health`, and more): the worker's record in
`chat.jobqueue.heartbeats`, releasing the jobs of workers whose record expired, and the queue
gauges; each runs in a loop that survives any Redis error (`chat.infra.outage.keep_running`)."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import Any

from arq.utils import timestamp_ms

from chat.infra import metrics
from chat.jobqueue import heartbeats, monitor
from chat.jobqueue.shards import shards_of
from workers.runtime.base import WorkerBase, iso, log


class Beating(WorkerBase):
    async def _beat(self) -> None:
        try:
            await heartbeats.beat(self.pool, self._record(), self._heartbeat_ttl_s, self._tags)
        except BaseException:
            self._connected_since = None
            raise
        if self._connected_since is None:
            self._connected_since = time.monotonic()
        await self.record_health()

    async def _reap(self) -> None:
        # Only a worker that has itself been connected for a whole expiry may judge others:
        # after an outage every record is stale, and their owners need time to beat again.
        since = self._connected_since
        if since is None or time.monotonic() - since < self._heartbeat_ttl_s:
            return
        # Every shard's, not only those this worker serves: a dead worker's jobs are released
        # even where no live worker serves its shards now, ready for the next one that does.
        dead, released = await heartbeats.reap(self.pool)
        if dead:
            log.warning("released %d jobs of %d dead workers: %s", len(released), len(dead), ", ".join(dead))
        if released:
            self._woken.update(self._by_queue)
            self._wake.set()

    def _record(self) -> dict[str, Any]:
        busy = Counter(running.queue for running in self._running.values())
        return {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": self.queue_name,
            "started_at": iso(int(self.started_at * 1000)),
            "last_beat_at": iso(timestamp_ms()),
            # `queue`'s slots; `lanes` has every lane's, that of webhook deliveries included, and
            # `shards` the queue shards it serves.
            "max_jobs": self.max_jobs,
            "running": busy[self.queue_name],
            "lanes": [{"queue": q, "max_jobs": n, "running": busy[q]} for q, n in self.slots.items()],
            "done": self.jobs_complete,
            "failed": self.jobs_failed,
            "job_ids": list(self._running),
            "shards": self.served,
        }

    async def _gauges(self) -> None:
        # Each lane's counts summed over every shard of the layout, not only those served here.
        layout = shards_of(self.pool)
        lanes = {lane: await monitor.queue_counts(self.pool, layout.queues(lane)) for lane in self.slots}
        for queue, lane in lanes.items():
            for state in ("queued", "deferred", "in_progress"):
                metrics.QUEUE_JOBS.labels(queue, state).set(lane[state])
        stats = lanes[self.queue_name]
        metrics.DEAD_LETTERS.labels(self.queue_name).set(stats["dead"])
        metrics.WORKERS.labels(self.queue_name).set(stats["workers"])
        metrics.QUEUE_OLDEST_AGE.labels(self.queue_name).set(stats["oldest_queued_age_s"])
        metrics.ARQ_QUEUED.set(stats["queued"])
        metrics.ARQ_ONGOING.set(len(self._running))
        metrics.ARQ_COMPLETED.set(self.jobs_complete)
        metrics.ARQ_FAILED.set(self.jobs_failed)
        metrics.ARQ_RETRIED.set(self.jobs_retried)
