"""Finishing: every job that ended meanwhile is written in one MULTI/EXEC (arq's `finish_job` and
`finish_failed_job`, batched): results, the commands the jobs staged in their outbox (events,
webhook deliveries), retries back in the queue, dead letters and the minute's counts, together or
not at all. Outcomes wait in memory while Redis is away."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from chat.infra import metrics, tracing
from chat.infra.failures import describe
from chat.infra.outage import Backoff
from chat.jobqueue import deadletters, heartbeats, jobstats
from chat.jobqueue.codec import serialize
from chat.jobqueue.keys import in_progress_key, job_key, result_key, retry_key
from workers.runtime.base import REDIS_DOWN, REDIS_ERRORS, Outcome, WorkerBase, iso, log


class Finishing(WorkerBase):
    async def _finish(self) -> None:
        # Yield once so that every job finishing in this loop iteration joins the transaction.
        await asyncio.sleep(0)
        backoff = Backoff()
        while self._finished:
            batch, self._finished = self._finished, []
            while True:
                try:
                    await self._write(batch)
                    break
                except REDIS_ERRORS as exc:
                    # The outcomes stay in memory until Redis is back; the slots stay taken.
                    self._outage.down(exc)
                    if self._stopping and self._pool is None:
                        return
                    await asyncio.sleep(backoff.next())
            self._outage.up()
            backoff.reset()
            for outcome in batch:
                self._count(outcome)
                if outcome.trace is not None:
                    outcome.trace.end(outcome.kind)
                running = self._running.pop(outcome.job.id, None)
                if running is not None and running.timer is not None:
                    running.timer.cancel()
            # A retry due later than this loop's next claim would sleep until the idle poll: one
            # more claim learns its due time (the claim answers the queue's next due score).
            if self._starved or self._stopping or any(o.kind == "retry" for o in batch):
                self._wake.set()

    async def _write(self, batch: list[Outcome]) -> None:
        held = heartbeats.held_key(self.worker_id)
        counts = {"complete": 0, "failed": 0, "retried": 0}
        # The batch's keys go in one DEL, one ZREM and one SREM, not three commands a job: on a
        # busy worker, redis-py's cost per command was a fifth of its CPU.
        gone: list[str] = []
        done: dict[str, list[str]] = {}
        async with self.pool.pipeline(transaction=True) as pipe:
            for outcome in batch:
                job_id = outcome.job.id
                if outcome.kind in ("complete", "failed"):
                    # Under the job's "publish" span: each event staged carries it to push.
                    with tracing.publishing(outcome.trace, len(outcome.outbox)):
                        for stage in outcome.outbox:
                            await stage(pipe)
                    data = self._result(outcome)
                    if data is not None and (outcome.keep_result_ms is None or outcome.keep_result_ms > 0):
                        pipe.set(result_key(job_id), data, px=outcome.keep_result_ms)
                    gone += (retry_key(job_id), job_key(job_id), in_progress_key(job_id))
                    done.setdefault(outcome.job.queue, []).append(job_id)
                    if outcome.kind == "failed":
                        await deadletters.record(pipe, self._dead_letter(outcome), *self._dead_letter_limits)
                    counts["complete" if outcome.kind == "complete" else "failed"] += 1
                elif outcome.kind == "retry":
                    # XX: a job that left the queue meanwhile (released and finished elsewhere) stays gone.
                    pipe.zadd(outcome.job.queue, {job_id: outcome.due_ms}, xx=True)
                    if outcome.gives_back_try:
                        # The claim counted this try; an outage does not use up the job's.
                        pipe.set(retry_key(job_id), max(0, outcome.job.tries - 1), xx=True, keepttl=True)
                    gone.append(in_progress_key(job_id))
                    counts["retried"] += 1
                else:
                    gone.append(in_progress_key(job_id))
            if gone:
                pipe.delete(*gone)
            for queue, ids in done.items():
                pipe.zrem(queue, *ids)
            pipe.srem(held, *(outcome.job.id for outcome in batch))
            jobstats.add(pipe, self.queue_name, counts)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, REDIS_DOWN):
                raise reply
            if isinstance(reply, Exception):
                log.error("finishing jobs: %s", describe(reply))  # not the commands: they hold bodies

    def _result(self, outcome: Outcome) -> bytes | None:
        data = {
            "t": outcome.tries,
            "f": outcome.function,
            "a": outcome.args,
            "k": outcome.kwargs,
            "et": outcome.enqueued_ms,
            "s": outcome.kind == "complete",
            "r": outcome.result,
            "st": outcome.started_ms,
            "ft": outcome.finished_ms,
            "q": outcome.job.queue,
            "id": outcome.job.id,
            "w": self.worker_id,
            "tb": outcome.traceback,
        }
        serializer = self.job_serializer or serialize
        try:
            return serializer(data)
        except Exception:
            log.warning("the result of %s cannot be serialised; storing its type", outcome.job.id)
            data["r"] = f"unserialisable {type(outcome.result).__name__}"
            return serializer(data)

    def _dead_letter(self, outcome: Outcome) -> dict[str, Any]:
        return {
            "job_id": outcome.job.id,
            "function": outcome.function,
            "args": list(outcome.args),
            "error": str(outcome.result),
            "reason": outcome.reason,
            "traceback": outcome.traceback,
            "tries": outcome.tries,
            "enqueued_at": iso(outcome.enqueued_ms) if outcome.enqueued_ms else None,
            "failed_at": iso(outcome.finished_ms),
            "worker_id": self.worker_id,
        }

    def _count(self, outcome: Outcome) -> None:
        name = outcome.function
        if outcome.kind == "complete":
            self.jobs_complete += 1
            metrics.JOBS.labels(name, "complete").inc()
        elif outcome.kind == "failed":
            self.jobs_failed += 1
            metrics.JOBS.labels(name, "failed").inc()
            log.warning("job %s failed for good (%s): %s", outcome.job.id, outcome.reason, outcome.result)
        elif outcome.kind == "retry":
            self.jobs_retried += 1
            metrics.JOBS.labels(name, "retried").inc()
        if outcome.kind != "release" and outcome.started_ms and outcome.finished_ms:
            metrics.JOB_DURATION.labels(name).observe((outcome.finished_ms - outcome.started_ms) / 1000)

    async def _stop_jobs(self, grace: float) -> None:
        tasks = [r.task for r in self._running.values()]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._finisher is not None:
            # Released jobs are written back so another worker runs them now, not after a timeout.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, *REDIS_ERRORS):
                await asyncio.wait_for(asyncio.shield(self._finisher), 5)
