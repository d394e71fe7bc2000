"""Every arq internal this product relies on, in one place.

arq's public surface is `enqueue_job`, `Job` and a worker that runs `async def f(ctx, ...)`. The
product goes further in three places, each for a measured reason:

1. The api writes jobs with a Lua script: one round trip per send, seq claim included, instead of
   `enqueue_job`'s WATCH/MULTI exchange of four.
2. `ChatWorker` claims every due job it has room for, with its body and try count, in one round
   trip, skipping jobs other workers hold; it finishes a batch of jobs (results, the events they
   publish, dead letters) in one MULTI/EXEC, so a job's events and its completion are written
   together or not at all.
3. `ChatWorker` marks the jobs it holds with its id, so a live worker can release a dead one's.

What that relies on, each pinned by `tests/workers/test_arq_seam.py`, which an arq upgrade that
changes any of them fails:

- Keys (`arq.constants`): `arq:job:<id>` holds the job body with an expiry, the queue is a sorted
  set of job ids scored by due time in ms, `arq:in-progress:<id>` exists while a worker runs the
  job (set NX with a PX timeout), `arq:retry:<id>` counts tries (INCR per try, 88400 s life),
  `arq:result:<id>` holds the result for `keep_result`.
- The job body: `serializer({"t": tries or None, "f": function, "a": args, "k": kwargs,
  "et": enqueued ms})`, read by `arq.jobs.deserialize_job_raw`.
- The result body: `{"t", "f", "a", "k", "et", "s", "r", "st", "ft", "q", "id"}`, read by
  `arq.jobs.deserialize_result`, which ignores the extra keys written here (`w` the worker id,
  `tb` a traceback).
- Finishing: a finished job's result is set and its retry, job and in-progress keys deleted and it
  leaves the queue; a retried job goes back in the queue at its new due time and only its
  in-progress key is deleted (`Worker.finish_job`, `Worker.finish_failed_job`).
- `arq.Worker`: its constructor's parameters and these attributes and methods, which ChatWorker
  uses or replaces: `functions` (`Function.coroutine`, `.timeout_s`, `.keep_result_s`,
  `.keep_result_forever`, `.max_tries`), `queue_name`, `max_jobs`, `job_timeout_s`,
  `keep_result_s`, `keep_result_forever`, `poll_delay_s`, `in_progress_timeout_s`, `max_tries`,
  `burst`, `max_burst_jobs`, `ctx`, `on_startup`, `on_shutdown`, `_pool`, `pool`,
  `redis_settings`, `job_serializer`, `job_deserializer`, `expires_extra_ms`, `allow_pick_jobs`,
  `health_check_key`, `jobs_complete`, `jobs_failed`, `jobs_retried`, `main`, `close`,
  `handle_sig`, `record_health`, `_jobs_started`.

A stock `arq.Worker` can share the queue with ChatWorker and runs every job; what it lacks is the
batching and the release of a dead worker's jobs before arq's in-progress timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from signal import Signals
from typing import Any, Literal

import orjson
import redis.exceptions
from arq import Retry, Worker
from arq.connections import create_pool
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from chat import deadletters, heartbeats, jobstats, metrics
from chat.failures import describe, scrubbed_traceback, unavailable
from chat.outage import Backoff, Outage, keep_running

log = logging.getLogger("workers.arq")

# arq hard-codes this life for the try counter (worker.py, run_job).
RETRY_KEY_SECONDS = 88400
EXPIRES_EXTRA_MS = expires_extra_ms

# The errors that mean "Redis is not there right now": wait and try again, never give up.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
# Every error Redis can answer with, besides being away: out of memory (`noeviction`), a script's
# error, a read-only replica. The worker's loops wait these out too, and carry on once Redis can.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)

# The first wait of a job that met a dependency away; later ones grow with the job's age.
OUTAGE_FIRST_RETRY_SECONDS = 0.2

# How often a worker that hears wake-ups looks at the queue anyway (WORKER_POLL_SECONDS applies
# while it cannot hear them, and to arq's own worker).
IDLE_POLL_SECONDS = 5.0
# The queue gauges take four round trips; Prometheus scrapes every 15 s or so, not every beat.
GAUGE_EVERY_BEATS = 5

# Set in the job context by ChatWorker: it records failures itself (dead letters, metrics), so a
# job function's own fallback for the stock arq worker must not record them a second time.
WORKER_RECORDS_FAILURES = "worker_records_failures"


def job_key(job_id: str) -> str:
    return job_key_prefix + job_id


def in_progress_key(job_id: str) -> str:
    return in_progress_key_prefix + job_id


def result_key(job_id: str) -> str:
    return result_key_prefix + job_id


def retry_key(job_id: str) -> str:
    return retry_key_prefix + job_id


def wake_channel(queue_name: str) -> str:
    """Published on every enqueue so idle ChatWorkers claim at once instead of at the next poll."""
    return f"{queue_name}:wake"


def job_body(function: str, args: Sequence[Any], enqueued_ms: int, tries: int | None = None) -> bytes:
    """A job as `ArqRedis.enqueue_job` serialises it with the product's JSON serializer.

    The args come last, so that the api's send script can splice the seq into the payload.
    """
    return serialize({"t": tries, "f": function, "k": {}, "et": enqueued_ms, "a": list(args)})


def serialize(obj: Any) -> bytes:
    # Jobs are JSON, never pickle: anyone able to write to Redis could otherwise run code in a worker.
    return orjson.dumps(obj, default=_json_default)


def deserialize(data: bytes) -> Any:
    return orjson.loads(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# A Lua function that enqueues one job the way enqueue_job does, for scripts that do more in the
# same round trip (the api's send). Returns 1 when enqueued, 0 when a job with that id is still
# queued, running or has a result.
LUA_ENQUEUE = f"""
local function arq_enqueue(queue, job_id, body, score, expires_ms, wake)
  local job = '{job_key_prefix}' .. job_id
  if redis.call('EXISTS', job, '{result_key_prefix}' .. job_id) ~= 0 then return 0 end
  redis.call('PSETEX', job, expires_ms, body)
  redis.call('ZADD', queue, score, job_id)
  redis.call('PUBLISH', wake, '1')
  return 1
end
"""

_ENQUEUE = (
    LUA_ENQUEUE
    + """
return arq_enqueue(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""
)


class QueueWriter:
    """Puts jobs on the queue in one round trip each, waking idle workers, as enqueue_job would."""

    def __init__(self, redis: Redis, queue_name: str) -> None:
        self.queue_name = queue_name
        self.wake = wake_channel(queue_name)
        self._enqueue = redis.register_script(_ENQUEUE)

    async def enqueue(self, function: str, args: Sequence[Any], job_id: str) -> bool:
        """Enqueue unless a job with this id is queued, running or finished."""
        now = timestamp_ms()
        body = job_body(function, args, now)
        argv: list[bytes | str | int] = [job_id, body, now, EXPIRES_EXTRA_MS, self.wake]
        return bool(await self._enqueue(keys=[self.queue_name], args=argv))

    def stage(self, pipe: Pipeline, function: str, args: Sequence[Any], job_id: str) -> None:
        """`enqueue` as a command in `pipe`: a job staged in a job's outbox is enqueued in the
        MULTI/EXEC that finishes that job, so both happen or neither does."""
        now = timestamp_ms()
        body = job_body(function, args, now)
        # EVAL with the text, as RedisPublisher.stage does: EVALSHA in a pipeline asks SCRIPT EXISTS.
        pipe.execute_command(
            "EVAL", _ENQUEUE, 1, self.queue_name, job_id, body, now, EXPIRES_EXTRA_MS, self.wake
        )


# KEYS[1] the queue, KEYS[2] the worker's set of held jobs. ARGV: now (ms), in-progress life (ms),
# worker id, how many to take, how many due entries to look at at most. Returns
# {next due score or -1, id, score, body or nil, tries, id, score, ...}.
_CLAIM = f"""
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[4])
local scan = tonumber(ARGV[5])
local out = {{-1}}
local taken, offset = 0, 0
while taken < want and offset < scan do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', offset, 200)
  if #due == 0 then break end
  for i = 1, #due, 2 do
    local id = due[i]
    if redis.call('SET', '{in_progress_key_prefix}' .. id, ARGV[3], 'PX', ARGV[2], 'NX') then
      local retry = '{retry_key_prefix}' .. id
      local tries = redis.call('INCR', retry)
      redis.call('EXPIRE', retry, {RETRY_KEY_SECONDS})
      redis.call('SADD', KEYS[2], id)
      out[#out + 1] = id
      out[#out + 1] = due[i + 1]
      out[#out + 1] = redis.call('GET', '{job_key_prefix}' .. id)
      out[#out + 1] = tries
      taken = taken + 1
      if taken >= want then break end
    end
  end
  offset = offset + 200
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #later > 0 then out[1] = later[2] end
return out
"""

# KEYS: queue, dead-letter hash, dead-letter index. ARGV: job id, job body, now (ms), expiry (ms),
# wake channel. Returns 1 re-enqueued, 0 the job is queued or running, -1 no such dead letter.
_REQUEUE = f"""
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[2], id) == 0 then return -1 end
if redis.call('EXISTS', '{job_key_prefix}' .. id, '{in_progress_key_prefix}' .. id) ~= 0
   or redis.call('ZSCORE', KEYS[1], id) then
  return 0
end
redis.call('DEL', '{result_key_prefix}' .. id, '{retry_key_prefix}' .. id)
redis.call('PSETEX', '{job_key_prefix}' .. id, ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], id)
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('PUBLISH', ARGV[5], '1')
return 1
"""


async def requeue_dead_letter(redis: Redis, queue_name: str, entry: dict[str, Any]) -> int:
    """Put a dead-lettered job back on the queue with its tries reset, and out of the dead letters.

    1 done, 0 the job is queued or running again already, -1 no such dead letter.
    """
    now = timestamp_ms()
    body = job_body(entry["function"], entry["args"], now)
    script = redis.register_script(_REQUEUE)
    keys = [queue_name, deadletters.HASH, deadletters.INDEX]
    argv: list[bytes | str | int] = [entry["job_id"], body, now, EXPIRES_EXTRA_MS, wake_channel(queue_name)]
    return int(await script(keys=keys, args=argv))


@dataclasses.dataclass(frozen=True, slots=True)
class JobState:
    """What Redis knows of one job, read in one round trip."""

    job_id: str
    status: Literal["deferred", "queued", "in_progress", "complete", "not_found"]
    function: str | None
    args: list[Any]
    tries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    success: bool | None
    result: Any
    worker_id: str | None
    traceback: str | None


async def job_state(redis: Redis, queue_name: str, job_id: str) -> JobState:
    """The job's state with arq's own precedence: result, then in progress, then queued."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(result_key(job_id))
        pipe.get(in_progress_key(job_id))
        pipe.zscore(queue_name, job_id)
        pipe.get(job_key(job_id))
        pipe.get(retry_key(job_id))
        result_raw, holder, score, body, tries_raw = await pipe.execute()
    tries = int(tries_raw) if tries_raw else 0
    holder_id = holder.decode() if holder and holder != b"1" else None
    if result_raw:
        r = deserialize(result_raw)
        return JobState(
            job_id=job_id,
            status="complete",
            function=r["f"],
            args=list(r["a"]),
            tries=int(r["t"] or 0),
            enqueued_at=ms_to_datetime(r["et"]).astimezone(UTC),
            started_at=ms_to_datetime(r["st"]).astimezone(UTC),
            finished_at=ms_to_datetime(r["ft"]).astimezone(UTC),
            success=bool(r["s"]),
            result=r["r"],
            worker_id=r.get("w"),
            traceback=r.get("tb"),
        )
    function, args, enqueued_at = None, [], None
    if body:
        f, a, _k, t, et = deserialize_job_raw(body, deserializer=deserialize)
        function, args, enqueued_at = f, list(a), ms_to_datetime(et).astimezone(UTC)
        tries = max(tries, int(t or 0))
    status: Literal["deferred", "queued", "in_progress", "complete", "not_found"]
    if holder is not None:
        status = "in_progress"
    elif score is not None:
        status = "deferred" if score > timestamp_ms() else "queued"
    else:
        status = "not_found"
    return JobState(
        job_id=job_id,
        status=status,
        function=function,
        args=args,
        tries=tries,
        enqueued_at=enqueued_at,
        started_at=None,
        finished_at=None,
        success=None,
        result=None,
        worker_id=holder_id,
        traceback=None,
    )


# Commands a job stages for the transaction that finishes it (the events it publishes).
Outbox = list[Callable[[Pipeline], Awaitable[Any]]]


@dataclasses.dataclass(slots=True)
class _Claimed:
    queue: str
    id: str
    score: int
    body: bytes | None
    tries: int


@dataclasses.dataclass(slots=True)
class _Outcome:
    job: _Claimed
    kind: Literal["complete", "retry", "failed", "release"]
    function: str = "<unknown>"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    tries: int = 0
    enqueued_ms: int = 0
    started_ms: int = 0
    finished_ms: int = 0
    result: Any = None
    due_ms: int = 0
    reason: str = ""
    traceback: str | None = None
    keep_result_ms: int | None = None
    outbox: Outbox = dataclasses.field(default_factory=list)
    gives_back_try: bool = False  # a retry because a dependency was away: the try does not count


@dataclasses.dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    queue: str
    timer: asyncio.TimerHandle | None = None  # cancels the job at its timeout
    timed_out: bool = False

    def time_out(self, job_id: str) -> None:
        if not self.task.done():
            log.warning("job %s ran over its timeout; cancelling it", job_id)
            self.timed_out = True
            self.task.cancel()


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class ChatWorker(Worker):
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

    def __init__(
        self,
        *args: Any,
        heartbeat_seconds: float = 2.0,
        heartbeat_ttl_seconds: float = 8.0,
        shutdown_grace_seconds: float = 5.0,
        dead_letter_max_count: int = 10_000,
        dead_letter_max_age_seconds: float = 7 * 86400,
        lanes: Mapping[str, int] | None = None,
        outage_max_seconds: float = 86400,
        outage_retry_max_seconds: float = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.slots: dict[str, int] = {self.queue_name: self.max_jobs, **(lanes or {})}
        self._turn = 0
        self.worker_id = new_worker_id()
        self.started_at = time.time()
        self._heartbeat_s = heartbeat_seconds
        self._heartbeat_ttl_s = heartbeat_ttl_seconds
        self._grace_s = shutdown_grace_seconds
        self._dead_letter_limits = (dead_letter_max_count, dead_letter_max_age_seconds)
        self._outage_max_s = outage_max_seconds
        self._outage_retry_max_s = outage_retry_max_seconds
        self._running: dict[str, _Running] = {}
        self._finished: list[_Outcome] = []
        self._finisher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._listening = False  # subscribed to the wake-up channel
        self._starved = False
        self._stopping = False
        self._connected_since: float | None = None
        self._outage = Outage(log, "Redis")
        self._wake_outage = Outage(log, "Redis (wake-ups)")
        # Loaded into Redis by the first claim that finds it missing.
        self._claim_sha = hashlib.sha1(_CLAIM.encode(), usedforsecurity=False).hexdigest()

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
        log.info("worker %s started for %s", self.worker_id, ", ".join(self.functions))
        self.ctx["redis"] = self.pool
        self.ctx["worker_id"] = self.worker_id
        self.ctx[WORKER_RECORDS_FAILURES] = True
        if self.on_startup:
            await self.on_startup(self.ctx)
        # Each loop keeps running whatever Redis answers (chat.outage.keep_running), and logs its
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
                await heartbeats.deregister(self.pool, self.worker_id)

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
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    # -- claiming ----------------------------------------------------------------------------------

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

    async def _claim(self, wants: dict[str, int]) -> list[tuple[list[_Claimed], int | None]]:
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
            self._claim_sha = await self.pool.script_load(_CLAIM)
        claims: list[tuple[list[_Claimed], int | None]] = []
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
                _Claimed(queue, _text(raw[i]), int(float(raw[i + 1])), raw[i + 2] or None, int(raw[i + 3]))
                for i in range(1, len(raw), 4)
            ]
            claims.append((claimed, next_due))
        if refused is None:
            self._outage.up()
        return claims

    def _start(self, job: _Claimed) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.id}")
        self._running[job.id] = _Running(task, job.queue)

    def _jobs_started(self) -> int:
        return self.jobs_complete + self.jobs_retried + self.jobs_failed + len(self._running)

    # -- running -----------------------------------------------------------------------------------

    async def _run(self, job: _Claimed) -> None:
        try:
            outcome = await self._execute(job)
        except asyncio.CancelledError:
            outcome = _Outcome(job, "release", reason="worker stopping")
        except Exception as exc:  # a bug in this loop, not in the job: release it for another try
            log.error("job %s could not be run\n%s", job.id, scrubbed_traceback(exc))
            outcome = _Outcome(job, "release", reason=repr(exc))
        self._finished.append(outcome)
        if self._finisher is None or self._finisher.done():
            self._finisher = asyncio.get_running_loop().create_task(self._finish())

    async def _execute(self, job: _Claimed) -> _Outcome:
        outcome = _Outcome(job, "failed", tries=job.tries, started_ms=timestamp_ms())
        if job.body is None:
            return self._fail(outcome, "expired", "JobExecutionFailed: job expired")
        try:
            function_name, args, kwargs, enqueue_try, enqueued_ms = deserialize_job_raw(
                job.body, deserializer=self.job_deserializer
            )
        except SerializationError as exc:
            return self._fail(outcome, "undecodable", f"SerializationError: {exc}")
        outcome.function, outcome.args, outcome.kwargs = function_name, tuple(args), dict(kwargs)
        outcome.enqueued_ms = enqueued_ms
        outcome.tries = tries = max(job.tries, int(enqueue_try or 0))
        function = self.functions.get(function_name)
        if function is None:
            return self._fail(outcome, "unknown_function", f"function {function_name!r} not found")
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if tries > max_tries:
            # Every earlier try ended without an outcome: its worker died or lost Redis each time.
            return self._fail(outcome, "max_tries", f"max {max_tries} tries exceeded")
        keep_s = self.keep_result_s if function.keep_result_s is None else function.keep_result_s
        forever = (
            self.keep_result_forever if function.keep_result_forever is None else function.keep_result_forever
        )
        outcome.keep_result_ms = None if forever else int(keep_s * 1000)
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        running = self._running[job.id]
        if timeout_s:
            # A timer per job, not a task polling them all: an idle worker wakes for nothing.
            loop = asyncio.get_running_loop()
            running.timer = loop.call_at(loop.time() + timeout_s, running.time_out, job.id)
        metrics.JOB_QUEUED_SECONDS.labels(function_name).observe(
            max(0, outcome.started_ms - job.score) / 1000
        )

        ctx = {
            **self.ctx,
            "job_id": job.id,
            "job_try": tries,
            "enqueue_time": ms_to_datetime(enqueued_ms),
            "score": job.score,
            "outbox": outcome.outbox,
        }
        try:
            outcome.result = await function.coroutine(ctx, *args, **kwargs)
        except Retry as retry:
            outcome.kind = "retry"
            outcome.due_ms = timestamp_ms() + (retry.defer_score or 0)
            outcome.outbox.clear()
            if retry.__cause__ is not None:  # `raise Retry(...) from exc`: what made the job retry
                self._wait_out(outcome, retry.__cause__)
        except asyncio.CancelledError:
            if not running.timed_out:
                raise
            outcome.outbox.clear()
            if tries < max_tries:
                outcome.kind = "retry"
                outcome.due_ms = timestamp_ms() + int(min(2**tries, 60) * 1000)
            else:
                self._fail(outcome, "timeout", f"TimeoutError: the job ran over {timeout_s} s")
        except Exception as exc:
            outcome.outbox.clear()
            # Logged ("failed for good") and shown to admins: no SQL values, bodies or URL secrets.
            self._fail(outcome, "raised", describe(exc), scrubbed_traceback(exc))
            self._wait_out(outcome, exc)
        else:
            outcome.kind = "complete"
        outcome.finished_ms = timestamp_ms()
        return outcome

    def _wait_out(self, outcome: _Outcome, exc: BaseException) -> None:
        """A dependency was away (chat.failures.unavailable): not the job's fault, so the try is
        given back and the job waits for it, however many tries it has left, until it is older
        than the outage budget (JOB_OUTAGE_MAX_SECONDS). Its back-off grows with its age, up to
        JOB_OUTAGE_RETRY_MAX_SECONDS: that bounds how soon the backlog drains once it is back."""
        away = unavailable(exc)
        if away is None:
            return
        now = timestamp_ms()
        age_s = max(0, now - (outcome.enqueued_ms or outcome.job.score)) / 1000
        if age_s > self._outage_max_s:
            error = f"{away} was unavailable; the job waited {age_s:.0f} s (JOB_OUTAGE_MAX_SECONDS)"
            self._fail(outcome, "outage", error, outcome.traceback)
            return
        outcome.kind = "retry"
        outcome.gives_back_try = True
        outcome.result = outcome.traceback = None
        outcome.reason = ""
        # Jittered, so that a backlog does not come back all at once.
        delay = min(self._outage_retry_max_s, max(OUTAGE_FIRST_RETRY_SECONDS, age_s))
        outcome.due_ms = now + int(delay * random.uniform(0.5, 1.0) * 1000)

    def _fail(self, outcome: _Outcome, reason: str, error: str, tb: str | None = None) -> _Outcome:
        outcome.kind = "failed"
        outcome.reason = reason
        outcome.result = error
        outcome.traceback = tb
        outcome.finished_ms = outcome.finished_ms or timestamp_ms()
        return outcome

    # -- finishing ---------------------------------------------------------------------------------

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
                running = self._running.pop(outcome.job.id, None)
                if running is not None and running.timer is not None:
                    running.timer.cancel()
            # A retry due later than this loop's next claim would sleep until the idle poll: one
            # more claim learns its due time (the claim answers the queue's next due score).
            if self._starved or self._stopping or any(o.kind == "retry" for o in batch):
                self._wake.set()

    async def _write(self, batch: list[_Outcome]) -> None:
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

    def _result(self, outcome: _Outcome) -> bytes | None:
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

    def _dead_letter(self, outcome: _Outcome) -> dict[str, Any]:
        return {
            "job_id": outcome.job.id,
            "function": outcome.function,
            "args": list(outcome.args),
            "error": str(outcome.result),
            "reason": outcome.reason,
            "traceback": outcome.traceback,
            "tries": outcome.tries,
            "enqueued_at": _iso(outcome.enqueued_ms) if outcome.enqueued_ms else None,
            "failed_at": _iso(outcome.finished_ms),
            "worker_id": self.worker_id,
        }

    def _count(self, outcome: _Outcome) -> None:
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

    # -- heartbeat, reaping and wake-ups -----------------------------------------------------------

    async def _beat(self) -> None:
        try:
            await heartbeats.beat(self.pool, self._record(), self._heartbeat_ttl_s)
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
        dead, released = await heartbeats.reap(self.pool)
        if dead:
            log.warning("released %d jobs of %d dead workers: %s", len(released), len(dead), ", ".join(dead))
        if released:
            self._wake.set()

    def _record(self) -> dict[str, Any]:
        busy = Counter(running.queue for running in self._running.values())
        return {
            "id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": self.queue_name,
            "started_at": _iso(int(self.started_at * 1000)),
            "last_beat_at": _iso(timestamp_ms()),
            # `queue`'s slots; `lanes` has every queue's, that of webhook deliveries included.
            "max_jobs": self.max_jobs,
            "running": busy[self.queue_name],
            "lanes": [{"queue": q, "max_jobs": n, "running": busy[q]} for q, n in self.slots.items()],
            "done": self.jobs_complete,
            "failed": self.jobs_failed,
            "job_ids": list(self._running),
        }

    async def _gauges(self) -> None:
        from chat import monitor

        lanes = {queue: await monitor.queue_counts(self.pool, queue) for queue in self.slots}
        for queue, lane in lanes.items():
            for state in ("queued", "deferred", "in_progress"):
                metrics.QUEUE_JOBS.labels(queue, state).set(lane[state])
        stats = lanes[self.queue_name]
        metrics.DEAD_LETTERS.labels(self.queue_name).set(stats["dead"])
        metrics.WORKERS.labels(self.queue_name).set(stats["workers"])
        metrics.ARQ_QUEUED.set(stats["queued"])
        metrics.ARQ_ONGOING.set(len(self._running))
        metrics.ARQ_COMPLETED.set(self.jobs_complete)
        metrics.ARQ_FAILED.set(self.jobs_failed)
        metrics.ARQ_RETRIED.set(self.jobs_retried)

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
