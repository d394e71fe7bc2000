"""Claiming (arq's `_poll_iteration` and `start_jobs`): the main loop takes every due job it has
free slots for, from every lane, in one round trip (`chat.jobqueue.scripts.CLAIM`), and starts
each; it sleeps until a wake-up, a slot frees, a retry falls due, or the poll delay passes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import redis.exceptions
from arq.utils import timestamp_ms

from chat.infra.outage import Backoff
from chat.jobqueue import heartbeats
from chat.jobqueue.keys import wake_channel
from chat.jobqueue.scripts import CLAIM
from workers.runtime.base import IDLE_POLL_SECONDS, REDIS_ERRORS, Claimed, Running, text
from workers.runtime.run import Runner


class Claiming(Runner):
    async def _loop(self) -> None:
        backoff = Backoff()
        while not self._stopping:
            self._wake.clear()
            # While wake-ups arrive, polling only catches what bypassed them (arq's own
            # enqueue_job, a job whose holder's in-progress key expired); an idle worker sleeps.
            timeout = self.poll_delay_s if self.burst or not self._listening else IDLE_POLL_SECONDS
            wants = self._free_slots()
            if wants and self.allow_pick_jobs:
                try:
                    claims = await self._claim(wants)
                except REDIS_ERRORS as exc:
                    self._outage.down(exc)
                    await asyncio.sleep(backoff.next())
                    continue
                backoff.reset()
                # Starved: some queue may hold more than we could take, so a freed slot claims again.
                self._starved = len(wants) < len(self.slots)
                for want, (claimed, next_due) in zip(wants.values(), claims, strict=True):
                    for job in claimed:
                        self._start(job)
                    self._starved |= len(claimed) == want
                    if next_due is not None:
                        timeout = min(timeout, max(0.0, (next_due - timestamp_ms()) / 1000))
                if self.burst and not self._running and await self._burst_done():
                    return
            else:
                self._starved = True
                if self.burst and not self._running and 0 <= self.max_burst_jobs <= self._jobs_started():
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _free_slots(self) -> dict[str, int]:
        """How many jobs each queue may start now (the queues that may start any)."""
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
            for queue in self.slots:
                pipe.zcard(queue)
            return not any(int(n) for n in await pipe.execute())

    async def _claim(self, wants: dict[str, int]) -> list[tuple[list[Claimed], int | None]]:
        """From each queue, up to its number of due jobs; with each, the queue's next due score."""
        now = timestamp_ms()
        held = heartbeats.held_key(self.worker_id)
        life = int(self.in_progress_timeout_s * 1000)
        # Every queue in one round trip: a busy worker claims on every wake-up. (A pipeline given
        # a Script object would ask Redis whether it knows the script first, every time.)
        replies: dict[str, Any] = {}
        for attempt in range(2):
            todo = [queue for queue in wants if queue not in replies]
            async with self.pool.pipeline(transaction=False) as pipe:
                for queue in todo:
                    argv = (now, life, self.worker_id, wants[queue], wants[queue] * 10 + 1000)
                    pipe.evalsha(self._claim_sha, 2, queue, held, *map(str, argv))
                answers = await pipe.execute(raise_on_error=False)
            for queue, answer in zip(todo, answers, strict=True):
                # A lane whose script Redis did not know (restarted, flushed) claimed nothing: it
                # runs again below; a lane that did claim keeps its jobs.
                if attempt == 1 or not isinstance(answer, redis.exceptions.NoScriptError):
                    replies[queue] = answer
            if len(replies) == len(wants):
                break
            self._claim_sha = await self.pool.script_load(CLAIM)
        claims: list[tuple[list[Claimed], int | None]] = []
        refused: Exception | None = None
        for queue in wants:
            raw = replies[queue]
            if isinstance(raw, Exception):
                # Redis refused this lane's claim (out of memory, busy with a script...): it took
                # nothing, and the other lanes' jobs still run. The poll asks again; the log says
                # so once, not on every poll.
                refused = raw
                self._outage.down(raw)
                claims.append(([], None))
                continue
            next_due = int(float(raw[0])) if int(float(raw[0])) >= 0 else None
            claimed = [
                Claimed(queue, text(raw[i]), int(float(raw[i + 1])), raw[i + 2] or None, int(raw[i + 3]))
                for i in range(1, len(raw), 4)
            ]
            claims.append((claimed, next_due))
        if refused is None:
            self._outage.up()
        return claims

    def _start(self, job: Claimed) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.id}")
        self._running[job.id] = Running(task, job.queue)

    def _jobs_started(self) -> int:
        return self.jobs_complete + self.jobs_retried + self.jobs_failed + len(self._running)

    async def _listen(self) -> None:
        """Hear wake-ups until the subscription breaks (kept running by `keep_running`; the poll
        delay covers the gap until it is back)."""
        try:
            async with self.pool.pubsub() as pubsub:
                await pubsub.subscribe(*(wake_channel(queue) for queue in self.slots))
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        # Anything enqueued while no wake-up could reach us is claimed now.
                        self._wake_outage.up()
                        self._listening = True
                        self._wake.set()
                    elif message["type"] == "message":
                        self._wake.set()
        finally:
            self._listening = False
