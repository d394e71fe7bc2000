"""What every part of ChatWorker shares: its state, set up once, and the records of one job on
its way through it (`Claimed` by claim.py, `Running` while run.py runs it, an `Outcome` that
finish.py writes). arq's worker keeps the same state in `Worker.__init__`.

A lane (the messages' queue, the webhook deliveries') is served from each queue shard the worker
serves (`chat.jobqueue.shards`, WORKER_SHARDS): `ShardQueue` is one of them, with the shard's tag
that its job ids, held set and dead letters carry. On one Redis a lane is one shard queue, named as
the lane, with no tag."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

import redis.exceptions
from arq import Worker
from redis.asyncio import Redis

from chat.infra.outage import Outage
from chat.infra.redisclient import is_cluster
from chat.jobqueue import heartbeats
from chat.jobqueue.outbox import Outbox
from chat.jobqueue.scripts import CLAIM
from chat.jobqueue.shards import Shards, shards_of

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
# error, a read-only replica; and a cluster client's own, which is no RedisError (a slot that no
# node serves while a replica takes over). The worker's loops wait these out too, and carry on
# once Redis can.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
)

# The first wait of a job that met a dependency away; later ones grow with the job's age.
OUTAGE_FIRST_RETRY_SECONDS = 0.2

# How often a worker that hears wake-ups looks at the queue anyway (WORKER_POLL_SECONDS applies
# while it cannot hear them, and to arq's own worker).
IDLE_POLL_SECONDS = 5.0
# How often the claim loop looks for jobs held in its name that it never started, beside after
# every claim that failed in transit (claim.py).
HELD_AUDIT_SECONDS = 5.0
# The queue gauges take four round trips; Prometheus scrapes every 15 s or so, not every beat.
GAUGE_EVERY_BEATS = 5


@dataclasses.dataclass(frozen=True, slots=True)
class ShardQueue:
    lane: str  # the lane's base name (QUEUE_NAME, or the webhook deliveries')
    queue: str  # this shard's queue: the lane's name and the shard's tag
    tag: str  # "" on one Redis
    held: str  # the worker's set of the jobs it holds from this shard, in the shard's slot


@dataclasses.dataclass(slots=True)
class Claimed:
    queue: str
    id: str
    score: int
    body: bytes | None
    tries: int
    shard: ShardQueue


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
    # On a cluster, how far finishing got (finish.py): its outbox published, its shard's
    # transaction run. A second try after an error does neither again.
    published: bool = False
    written: bool = False
    trace: JobTrace | None = None  # its spans while tracing is on (chat.infra.tracing)


@dataclasses.dataclass(slots=True)
class Running:
    task: asyncio.Task[None]
    queue: str  # its lane, whose slots it takes
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
        shards: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Each lane's slots, shared by its shard queues.
        self.slots: dict[str, int] = {self.queue_name: self.max_jobs, **(lanes or {})}
        self._turn = 0
        self._served = list(shards) if shards else None  # None: every shard of the layout
        # Set by `_lay_out` once the pool exists: each lane's shard queues, by lane and by name.
        self.shard_queues: dict[str, list[ShardQueue]] = {}
        self._by_queue: dict[str, ShardQueue] = {}
        self.served: list[int] = [0]
        self._tags: list[str] = [""]
        self._cluster = False  # a Redis Cluster: finishing per shard, wake-ups from one master
        self._woken: set[str] = set()  # shard queues whose wake-up came since the loop last looked
        # The tags of shards where a claim failed in transit: Redis may have run it all the same
        # and hold jobs in this worker's name that it never started (claim.py releases them).
        self._unsure: set[str] = set()
        self._rotation: dict[str, int] = {}  # per lane, the shard whose turn it is to come first
        self._wake_node = 0  # on a cluster, which master to hear wake-ups from
        self._nodes: dict[str, Redis] = {}  # on a cluster, a client of the master of each shard
        self.worker_id = new_worker_id()
        self.started_at = time.time()
        self._heartbeat_s = heartbeat_seconds
        self._heartbeat_ttl_s = heartbeat_ttl_seconds
        self._grace_s = shutdown_grace_seconds
        self._dead_letter_limits = (dead_letter_max_count, dead_letter_max_age_seconds)
        self._dead_letter_cap = self._dead_letter_limits  # per shard, set by `_lay_out`
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
        if self._pool is not None:
            self._lay_out()

    def _lay_out(self) -> None:
        """The shard queues of each lane, from the key layout of the pool (`shards_of`)."""
        layout = shards_of(self.pool)
        served = self._served if self._served is not None else list(layout.all)
        wrong = [k for k in served if k >= layout.count]
        if wrong:
            raise ValueError(f"WORKER_SHARDS names shards {wrong} but QUEUE_SHARDS is {layout.count}")
        self.served = served
        self._tags = [layout.tag(k) for k in served]
        self.shard_queues = {
            lane: [self._shard_queue(layout, lane, k) for k in served] for lane in self.slots
        }
        self._by_queue = {sq.queue: sq for queues in self.shard_queues.values() for sq in queues}
        self._cluster = is_cluster(self.pool)
        # DEAD_LETTER_MAX_COUNT over all shards: each keeps its share.
        count, age = self._dead_letter_limits
        self._dead_letter_cap = (-(-count // layout.count), age)

    def _shard_queue(self, layout: Shards, lane: str, shard: int) -> ShardQueue:
        tag = layout.tag(shard)
        return ShardQueue(lane, layout.queue(lane, shard), tag, heartbeats.held_key(self.worker_id, tag))

    def _node_client(self, host: str, port: int) -> Redis:
        """A plain client of one cluster node, with the cluster client's credentials: for what a
        cluster client cannot do (MULTI, SUBSCRIBE). Without the restart check of the cluster's own
        connections (`chat.infra.restarts`): the counters it guards are the send path's."""
        options = cast(Any, self.pool).connection_kwargs
        return Redis(host=host, port=port, username=options.get("username"), password=options.get("password"))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
