"""Claiming (arq's `_poll_iteration` and `start_jobs`): the main loop takes every due job it has
free slots for, from every lane, in one round trip (`chat.jobqueue.scripts.CLAIM`), and starts
each; it sleeps until a wake-up, a slot frees, a retry falls due, or the poll delay passes.

With queue shards a lane's free slots are split over its shard queues, never more in total. The
shards that may have due jobs ("hot": woken since the last claim, came back full, or holding a
retry that fell due) share them first, with one other shard in rotation, so a shard whose wake-up
was lost is looked at within as many claims as there are shards; after a poll timeout, or with no
hot shard, every shard gets a share. A shard that came back full while its lane still has free
slots is asked again at once. On one Redis a lane is one queue, which gets all its free slots.

A claim can run in Redis and its answer still be lost: the connection drops between the two (a
primary killed after its replica had the claim), or a cluster client, on one node's error, closes
every connection and sends the rest of the pipeline again, so that the second run answers without
what the first one took. Those jobs are held in this worker's name and would wait out their
in-progress life (40 s by default). After a claim that failed, and every few seconds anyway, the
loop releases what is held in its name but not running here, before it claims again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any, cast

import redis.exceptions
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from chat.infra.outage import Backoff
from chat.jobqueue import heartbeats
from chat.jobqueue.keys import wake_channel
from chat.jobqueue.scripts import CLAIM
from workers.runtime.base import (
    HELD_AUDIT_SECONDS,
    IDLE_POLL_SECONDS,
    REDIS_ERRORS,
    Claimed,
    Running,
    log,
    text,
)
from workers.runtime.run import Runner


class Claiming(Runner):
    async def _loop(self) -> None:
        backoff = Backoff()
        polled = True  # the first claim looks at every shard
        woken: set[str] = set()  # shard queues woken, or with a retry due, since the last claim
        full: set[str] = set()  # shard queues whose last claim took all it asked for
        due: dict[str, int] = {}  # each shard queue's next due score after its last claim
        audit_at = time.monotonic() + HELD_AUDIT_SECONDS
        while not self._stopping:
            self._wake.clear()
            woken |= self._woken
            self._woken.clear()
            # While wake-ups arrive, polling only catches what bypassed them (arq's own
            # enqueue_job, a job whose holder's in-progress key expired); an idle worker sleeps.
            timeout = self.poll_delay_s if self.burst or not self._listening else IDLE_POLL_SECONDS
            wants = self._free_slots()
            if wants and self.allow_pick_jobs:
                try:
                    if time.monotonic() >= audit_at:
                        # What no error told of: a cluster pipeline that failed on one node and
                        # succeeded on a retry may have claimed on another in between.
                        self._unsure.update(self._tags)
                        audit_at = time.monotonic() + HELD_AUDIT_SECONDS
                    if self._unsure:
                        released = await self._release_unknown_claims()
                        woken |= {q for q, shard in self._by_queue.items() if shard.tag in released}
                    now = timestamp_ms()
                    hot = woken | full | {queue for queue, at in due.items() if at <= now}
                    asks = self._split(wants, None if polled else hot)
                    try:
                        claims = await self._claim(asks)
                    except REDIS_ERRORS:
                        self._unsure.update(self._by_queue[queue].tag for queue in asks)
                        raise
                except REDIS_ERRORS as exc:
                    self._outage.down(exc)
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                woken.clear()
                # Starved: some queue may hold more than we could take, so a freed slot claims again.
                self._starved = len(wants) < len(self.slots)
                taken: Counter[str] = Counter()
                for (queue, want), (claimed, next_due) in zip(asks.items(), claims, strict=True):
                    shard = self._by_queue[queue]
                    for job in claimed:
                        self._start(job)
                    taken[shard.lane] += len(claimed)
                    if len(claimed) == want:
                        full.add(shard.queue)
                        self._starved = True
                    else:
                        full.discard(shard.queue)
                    due.pop(shard.queue, None)
                    if next_due is not None:
                        due[shard.queue] = next_due
                        timeout = min(timeout, max(0.0, (next_due - timestamp_ms()) / 1000))
                if any(taken[lane] < free for lane, free in wants.items() if full & self._queues_of(lane)):
                    self._wake.set()  # a shard came back full and its lane has slots left: again now
                if self.burst and not self._running and await self._burst_done():
                    return
            else:
                self._starved = True
                if self.burst and not self._running and 0 <= self.max_burst_jobs <= self._jobs_started():
                    return
            polled = False
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                polled = True

    def _queues_of(self, lane: str) -> set[str]:
        return {shard.queue for shard in self.shard_queues[lane]}

    def _split(self, wants: dict[str, int], hot: set[str] | None) -> dict[str, int]:
        """Each lane's free slots over its shard queues (`hot` None: a poll, every shard)."""
        asks: dict[str, int] = {}
        for lane, free in wants.items():
            shards = self.shard_queues[lane]
            if len(shards) == 1:
                asks[shards[0].queue] = free
                continue
            turn = self._rotation[lane] = (self._rotation.get(lane, -1) + 1) % len(shards)
            ring = shards[turn:] + shards[:turn]
            chosen = [s for s in ring if s.queue in hot] if hot is not None else ring
            if not chosen:
                chosen = ring
            elif len(chosen) < len(ring):
                chosen.append(next(s for s in ring if s not in chosen))  # a lost wake-up's look
            share, extra = divmod(free, len(chosen))
            asks.update((s.queue, share + (i < extra)) for i, s in enumerate(chosen) if share + (i < extra))
        return asks

    def _free_slots(self) -> dict[str, int]:
        """How many jobs each lane may start now (the lanes that may start any)."""
        busy = Counter(running.queue for running in self._running.values())
        burst_left = (
            self.max_burst_jobs - self._jobs_started() if self.burst and self.max_burst_jobs >= 0 else None
        )
        lanes = list(self.slots.items())
        if burst_left is not None:
            # What is left of a burst goes to each lane first in turn, so one with nothing due
            # cannot keep it from the others.
            self._turn = (self._turn + 1) % len(lanes)
            lanes = lanes[self._turn :] + lanes[: self._turn]
        wants: dict[str, int] = {}
        for queue, slots in lanes:
            free = slots - busy[queue]
            if burst_left is not None:
                free = min(free, burst_left)
                burst_left -= max(free, 0)
            if free > 0:
                wants[queue] = free
        return wants

    async def _burst_done(self) -> bool:
        if 0 <= self.max_burst_jobs <= self._jobs_started():
            return True
        async with self.pool.pipeline(transaction=False) as pipe:
            for queue in self._by_queue:
                pipe.zcard(queue)
            return not any(int(n) for n in await pipe.execute())

    async def _claim(self, asks: dict[str, int]) -> list[tuple[list[Claimed], int | None]]:
        """From each shard queue, up to its number of due jobs; with each, the queue's next due
        score. One round trip (a cluster pipeline sends each node its part at once)."""
        shards = [(self._by_queue[queue], want) for queue, want in asks.items()]
        now = timestamp_ms()
        life = int(self.in_progress_timeout_s * 1000)
        # A busy worker claims on every wake-up. (A pipeline given a Script object would ask Redis
        # whether it knows the script first, every time; and a cluster pipeline has no evalsha.)
        replies: dict[int, Any] = {}
        for attempt in range(2):
            todo = [i for i in range(len(shards)) if i not in replies]
            async with self.pool.pipeline(transaction=False) as pipe:
                for i in todo:
                    shard, want = shards[i]
                    argv = (now, life, self.worker_id, want, want * 10 + 1000)
                    # KEYS[2], the held set, is the shard's: the script stays in one slot.
                    pipe.execute_command(
                        "EVALSHA", self._claim_sha, 2, shard.queue, shard.held, *map(str, argv)
                    )
                answers = await pipe.execute(raise_on_error=False)
            for i, answer in zip(todo, answers, strict=True):
                # A queue whose script Redis did not know (restarted, flushed) claimed nothing: it
                # runs again below; a queue that did claim keeps its jobs.
                if attempt == 1 or not isinstance(answer, redis.exceptions.NoScriptError):
                    replies[i] = answer
            if len(replies) == len(shards):
                break
            await self.pool.script_load(CLAIM)  # on a cluster, into every master
        claims: list[tuple[list[Claimed], int | None]] = []
        refused: Exception | None = None
        for i, (shard, _) in enumerate(shards):
            raw = replies[i]
            if isinstance(raw, Exception):
                # Redis refused this queue's claim (out of memory, busy with a script...), or its
                # answer was lost on the way: the other queues' jobs still run. The poll asks again;
                # the log says so once, not on every poll.
                refused = raw
                if not isinstance(raw, redis.exceptions.ResponseError):
                    self._unsure.add(shard.tag)
                self._outage.down(raw)
                claims.append(([], None))
                continue
            next_due = int(float(raw[0])) if int(float(raw[0])) >= 0 else None
            claimed = [
                Claimed(
                    shard.queue,
                    text(raw[j]),
                    int(float(raw[j + 1])),
                    raw[j + 2] or None,
                    int(raw[j + 3]),
                    shard,
                )
                for j in range(1, len(raw), 4)
            ]
            claims.append((claimed, next_due))
        if refused is None:
            self._outage.up()
        return claims

    async def _release_unknown_claims(self) -> dict[str, list[str]]:
        """Release the jobs Redis holds in this worker's name on the shards of `_unsure` that it
        never started (by shard tag): their claim ran, but its answer was lost with the connection
        (a primary killed after replicating it, or a cluster pipeline that failed on another node).
        Left held they would wait out their in-progress life before another claim could take them.
        Called from the claim loop, between claims, so that no claim's jobs are in flight."""
        tags = sorted(self._unsure)
        released = await heartbeats.release_unknown(self.pool, self.worker_id, tags, list(self._running))
        self._unsure.clear()
        if released:
            count = sum(map(len, released.values()))
            log.warning("released %d jobs taken by a claim whose answer was lost; they run again", count)
        return released

    def _start(self, job: Claimed) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.id}")
        self._running[job.id] = Running(task, job.shard.lane)

    def _jobs_started(self) -> int:
        return self.jobs_complete + self.jobs_retried + self.jobs_failed + len(self._running)

    async def _listen(self) -> None:
        """Hear wake-ups until the subscription breaks (kept running by `keep_running`; the poll
        delay covers the gap until it is back). Each shard queue has its own channel, so a
        wake-up says which shard to claim from first."""
        channels = {wake_channel(queue): queue for queue in self._by_queue}
        client, owned = await self._wake_client()
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(*channels)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        # Anything enqueued while no wake-up could reach us is claimed now.
                        self._wake_outage.up()
                        self._listening = True
                        self._woken.update(self._by_queue)
                        self._wake.set()
                    elif message["type"] == "message":
                        queue = channels.get(text(message["channel"]))
                        if queue is not None:
                            self._woken.add(queue)
                        self._wake.set()
        except BaseException:
            self._wake_node += 1  # on a cluster, the next try subscribes on another master
            raise
        finally:
            self._listening = False
            if owned:
                with contextlib.suppress(*REDIS_ERRORS):
                    await client.aclose()

    async def _wake_client(self) -> tuple[Redis, bool]:
        """Where to subscribe: the pool; on a cluster (whose client has no pubsub, and where
        PUBLISH reaches every node) a client of one master, another after each failure."""
        if not self._cluster:
            return self.pool, False
        cluster = cast(Any, self.pool)
        await cluster.initialize()
        masters = cluster.get_primaries()
        node = masters[self._wake_node % len(masters)]
        return self._node_client(node.host, node.port), True
