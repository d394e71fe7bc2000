"""What every part of ChatWorker shares: its state, set up once, and the records of one job on
its way through it (`Claimed` by claim.py, `Running` while run.py runs it, an `Outcome` that
finish.py writes). arq's worker keeps the same state in `Worker.__init__`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import redis.exceptions
from arq import Worker

from chat.infra.outage import Outage
from chat.jobqueue.outbox import Outbox
from chat.jobqueue.scripts import CLAIM

if TYPE_CHECKING:
    from chat.infra.tracing import JobTrace

log = logging.getLogger("workers.arq")

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


@dataclasses.dataclass(slots=True)
class Claimed:
    queue: str
    id: str
    score: int
    body: bytes | None
    tries: int


@dataclasses.dataclass(slots=True)
class Outcome:
    job: Claimed
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
    trace: JobTrace | None = None  # its spans while tracing is on (chat.infra.tracing)


@dataclasses.dataclass(slots=True)
class Running:
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


class WorkerBase(Worker):
    """arq's Worker with ChatWorker's state; the parts (claim, run, finish, heartbeat) build on it."""

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
        self._running: dict[str, Running] = {}
        self._finished: list[Outcome] = []
        self._finisher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._listening = False  # subscribed to the wake-up channel
        self._starved = False
        self._stopping = False
        self._connected_since: float | None = None
        self._outage = Outage(log, "Redis")
        self._wake_outage = Outage(log, "Redis (wake-ups)")
        # Loaded into Redis by the first claim that finds it missing.
        self._claim_sha = hashlib.sha1(CLAIM.encode(), usedforsecurity=False).hexdigest()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
