"""Finishing: every job that ended meanwhile is written in one MULTI/EXEC (arq's `finish_job` and
`finish_failed_job`, batched): results, the commands the jobs staged in their outbox (events,
webhook deliveries), retries back in the queue, dead letters and the minute's counts, together or
not at all. Outcomes wait in memory while Redis is away.

On a Redis Cluster a transaction may touch one hash slot, and a job's outbox reaches other slots
(its receivers' streams, other shards' queues). There the batch is written in two steps: first
every outbox, in one non-transactional cluster pipeline (each node gets its part at once); then,
per queue shard, one MULTI/EXEC of the jobs' own bookkeeping (results, queue, held set, dead
letters, counts, all carrying the shard's tag) on the shard's master, the shards in parallel. A
worker that dies between the two leaves its jobs held: they are released and run again, and their
events and deliveries are published a second time. On a cluster a job's outbox is therefore
at-least-once (receivers de-duplicate by event and delivery id; `chat.domain.webhooks`), where on
one Redis it is exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, cast

import redis.exceptions
from redis.asyncio.client import Pipeline

from chat.infra import metrics, tracing
from chat.infra.failures import describe
from chat.infra.outage import Backoff
from chat.jobqueue import deadletters, jobstats
from chat.jobqueue.codec import serialize
from chat.jobqueue.jobs import PERSIST_MESSAGE
from chat.jobqueue.keys import in_progress_key, job_key, result_key, retry_key
from workers.runtime.base import REDIS_DOWN, REDIS_ERRORS, Outcome, WorkerBase, iso, log

# What a shard's transaction on the node last known to own its slot can meet after a failover or
# a resharding: ask the cluster for its slots again, and write the shard there.
_ELSEWHERE: tuple[type[BaseException], ...] = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ExecAbortError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.RedisClusterException,  # a slot no node serves yet
    *REDIS_DOWN,
)


class Finishing(WorkerBase):
    async def _finish(self) -> None:
        # Yield once so that every job finishing in this loop iteration joins the transaction.
        await asyncio.sleep(0)
        backoff = Backoff()
        while self._finished:
            batch, self._finished = self._finished, []
            _messages_in_seq_order(batch)
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
        if self._cluster:
            await self._write_per_shard(batch)
            return
        async with self.pool.pipeline(transaction=True) as pipe:
            for outcome in batch:
                if outcome.kind in ("complete", "failed"):
                    await self._publish(pipe, outcome)
            self._bookkeeping(pipe, batch)
            _check(await pipe.execute(raise_on_error=False))

    async def _write_per_shard(self, batch: list[Outcome]) -> None:
        """A cluster's two steps (the module's doc). Run again after an error, it skips what was
        written: outboxes published, shards whose transaction ran."""
        todo = [o for o in batch if not o.written]
        publish = [o for o in todo if o.kind in ("complete", "failed") and o.outbox and not o.published]
        if publish:
            async with self.pool.pipeline(transaction=False) as pipe:
                for outcome in publish:
                    await self._publish(pipe, outcome)
                _check(await pipe.execute(raise_on_error=False))
            for outcome in publish:
                outcome.published = True
        shards: dict[str, list[Outcome]] = {}
        for outcome in todo:
            shards.setdefault(outcome.job.shard.tag, []).append(outcome)
        ends = await asyncio.gather(
            *(self._write_shard(tag, outcomes) for tag, outcomes in shards.items()), return_exceptions=True
        )
        failed: BaseException | None = None
        for outcomes, end in zip(shards.values(), ends, strict=True):
            if isinstance(end, BaseException):
                failed = failed or end
            else:
                for outcome in outcomes:
                    outcome.written = True
        if failed is not None:
            raise failed

    async def _write_shard(self, tag: str, outcomes: list[Outcome]) -> None:
        cluster = cast(Any, self.pool)
        node = cluster.get_node_from_key(outcomes[0].job.shard.held)
        client = self._nodes.get(node.name)
        if client is None:
            client = self._nodes[node.name] = self._node_client(node.host, node.port)
        try:
            async with client.pipeline(transaction=True) as pipe:
                self._bookkeeping(pipe, outcomes)
                _check(await pipe.execute(raise_on_error=False))
        except _ELSEWHERE:
            # Its slot moved, or the node is gone: learn the slots again before the next try.
            self._nodes.pop(node.name, None)
            with contextlib.suppress(*REDIS_ERRORS):
                await client.aclose()
            with contextlib.suppress(*REDIS_ERRORS):
                await cluster.nodes_manager.initialize()
            raise

    async def _publish(self, pipe: Pipeline, outcome: Outcome) -> None:
        # Under the job's "publish" span: each event staged carries it to push.
        with tracing.publishing(outcome.trace, len(outcome.outbox)):
            for stage in outcome.outbox:
                await stage(pipe)

    def _bookkeeping(self, pipe: Pipeline, batch: Sequence[Outcome]) -> None:
        """The jobs' own writes: each in the slot of its shard's tag."""
        counts: dict[str, dict[str, int]] = {}
        # The batch's keys go in one DEL, one ZREM and one SREM a shard, not three commands a job:
        # on a busy worker, redis-py's cost per command was a fifth of its CPU.
        gone: dict[str, list[str]] = {}
        done: dict[str, list[str]] = {}
        held: dict[str, list[str]] = {}
        limit, age = self._dead_letter_cap
        for outcome in batch:
            job_id, shard = outcome.job.id, outcome.job.shard
            tally = counts.setdefault(shard.tag, {"complete": 0, "failed": 0, "retried": 0})
            keys = gone.setdefault(shard.tag, [])
            held.setdefault(shard.held, []).append(job_id)
            if outcome.kind in ("complete", "failed"):
                data = self._result(outcome)
                if data is not None and (outcome.keep_result_ms is None or outcome.keep_result_ms > 0):
                    pipe.set(result_key(job_id), data, px=outcome.keep_result_ms)
                keys += (retry_key(job_id), job_key(job_id), in_progress_key(job_id))
                done.setdefault(outcome.job.queue, []).append(job_id)
                if outcome.kind == "failed":
                    deadletters.stage(pipe, self._dead_letter(outcome), limit, age, shard.tag)
                tally["complete" if outcome.kind == "complete" else "failed"] += 1
            elif outcome.kind == "retry":
                # XX: a job that left the queue meanwhile (released and finished elsewhere) stays gone.
                pipe.zadd(outcome.job.queue, {job_id: outcome.due_ms}, xx=True)
                if outcome.gives_back_try:
                    # The claim counted this try; an outage does not use up the job's.
                    pipe.set(retry_key(job_id), max(0, outcome.job.tries - 1), xx=True, keepttl=True)
                keys.append(in_progress_key(job_id))
                tally["retried"] += 1
            else:
                keys.append(in_progress_key(job_id))
        for keys in gone.values():
            if keys:
                pipe.delete(*keys)
        for queue, ids in done.items():
            pipe.zrem(queue, *ids)
        for key, ids in held.items():
            pipe.srem(key, *ids)
        for tag, tally in counts.items():
            # Kept per shard, beside the jobs; on one Redis the key is the queue's, as it was.
            jobstats.add(pipe, self.queue_name + tag, tally)

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


def _check(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, REDIS_DOWN):
            raise reply
        if isinstance(reply, Exception):
            log.error("finishing jobs: %s", describe(reply))  # not the commands: they hold bodies


def _messages_in_seq_order(batch: list[Outcome]) -> None:
    """Puts the stored messages of one conversation in `seq` order, each in a place a message held,
    everything else where it was: the batcher resolves its jobs in that order, but a job that
    awaited again before it finished (the webhook registry's read) may end after a later one."""
    places = [i for i, o in enumerate(batch) if o.function == PERSIST_MESSAGE and o.args]
    ordered = sorted((batch[i] for i in places), key=_seq_key)
    for i, outcome in zip(places, ordered, strict=True):
        batch[i] = outcome


def _seq_key(outcome: Outcome) -> tuple[str, int]:
    payload = outcome.args[0]
    if not isinstance(payload, dict):
        return "", 0
    seq = payload.get("seq")
    return str(payload.get("conversation_id")), seq if isinstance(seq, int) else 0
