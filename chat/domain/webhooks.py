"""Webhooks: which events go where, the body and signature of a delivery, and its dispatch.

Every process that publishes events (the api and the workers) wraps its publisher in a
`WebhookPublisher`: after the WebSocket publish, each webhook subscribed to the event's type gets
one `deliver_webhook` job (workers/webhooks.py). Under ChatWorker that job is staged in the outbox
of the job that published the event, so it is enqueued in the very MULTI/EXEC that finishes the
job and publishes its event: both happen or neither does.

The list of webhooks is cached in each process (`Registry`), so the message path does not ask
Postgres for it: the admin api bumps a version key in Redis on every change, and a process reads
that key at most every WEBHOOK_REGISTRY_REFRESH_SECONDS and the list only when the key moved.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.infra import metrics
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.lanes import DELIVER_WEBHOOK, WEBHOOK_JOB_PREFIX
from chat.jobqueue.outbox import Outbox
from chat.models import Webhook
from chat.realtime import presence
from chat.realtime.eventbus import Publisher
from chat.realtime.events import MessageCreated, StoredEvent, Typing

log = logging.getLogger("chat.domain.webhooks")

VERSION_KEY = "chat:webhooks:version"

# Every durable event type; the api and the workers publish all of them (typing is ephemeral).
EVENT_TYPES: tuple[str, ...] = tuple(
    get_args(model.model_fields["type"].annotation)[0] for model in get_args(StoredEvent)
)

# Event and delivery ids derived from the publishing job's id: a job that runs again after a crash
# dispatches the same ids, so the queue enqueues nothing twice and a receiver can de-duplicate.
_NAMESPACE = uuid.UUID("5b0d3f7e-7a44-4c36-9f1e-3c8e2f5a9d61")


@dataclass(frozen=True, slots=True)
class Hook:
    id: uuid.UUID
    url: str
    events: frozenset[str]
    secret: str


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `X-Webhook-Signature` value: HMAC-SHA256 of "{timestamp}.{raw body}", in hex."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, given: str, *, tolerance_seconds: int = 300) -> bool:
    """What a receiver does (docs/api.md shows the same): a constant-time compare, and a timestamp
    no older than the tolerance, so a captured request cannot be replayed later."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_seconds and hmac.compare_digest(signature(secret, timestamp, body), given)


def loader(sessions: async_sessionmaker[AsyncSession]) -> Callable[[], Awaitable[list[Hook]]]:
    """Reads every webhook from Postgres: the registry's source."""

    async def load() -> list[Hook]:
        async with sessions() as session:
            rows = await session.scalars(select(Webhook))
            return [Hook(row.id, row.url, frozenset(row.events), row.secret) for row in rows]

    return load


def create_dispatcher(
    redis: Redis, sessions: async_sessionmaker[AsyncSession], *, queue_name: str, refresh_seconds: float
) -> Dispatcher:
    registry = Registry(redis, loader(sessions), refresh_seconds=refresh_seconds)
    return Dispatcher(redis, registry, queue_name)


async def bump(redis: Redis) -> None:
    """Tell every process's registry that the webhooks changed."""
    await redis.incr(VERSION_KEY)


class Registry:
    """This process's copy of the registered webhooks.

    Costs one GET of the version key per refresh interval, and a Postgres read only when an admin
    changed something; with no webhooks at all that GET is the whole price of the feature.

    A caller may ask for the list as of a moment (`since`, unix seconds): a job passes its enqueue
    time, so a webhook registered before its message was accepted is never missed however long
    the interval. A batch of jobs claimed together shares one read: it began after all of them
    were enqueued.
    """

    def __init__(
        self, redis: Redis, load: Callable[[], Awaitable[list[Hook]]], *, refresh_seconds: float
    ) -> None:
        self._redis = redis
        self._load = load
        self._refresh = refresh_seconds
        self._hooks: list[Hook] | None = None
        self._version: bytes | None = None
        self._checked = float("-inf")  # monotonic, when the last version read began
        self._checked_at = float("-inf")  # the same moment in unix seconds, to compare with `since`
        self._lock = asyncio.Lock()

    def _fresh(self, since: float | None) -> bool:
        if self._hooks is None or time.monotonic() - self._checked >= self._refresh:
            return False
        return since is None or self._checked_at >= since

    async def hooks(self, since: float | None = None) -> list[Hook]:
        if self._fresh(since):
            assert self._hooks is not None  # noqa: S101 - _fresh says so
            return self._hooks
        # One refresh at a time: a burst of jobs that find the copy stale waits for one read.
        async with self._lock:
            if self._fresh(since):
                assert self._hooks is not None  # noqa: S101 - _fresh says so
                return self._hooks
            return await self._reload()

    async def _reload(self) -> list[Hook]:
        began, began_at = time.monotonic(), time.time()
        version = await self._redis.get(VERSION_KEY)
        if self._hooks is not None and version == self._version:
            self._checked, self._checked_at = began, began_at
            return self._hooks
        try:
            # Read after the version: a change landing in between is read now and again next time.
            hooks = await self._load()
        except Exception:
            if self._hooks is None:
                raise
            # Events keep flowing to the webhooks known before Postgres went away.
            log.warning("could not reload the webhooks; using the list read before", exc_info=True)
            self._checked, self._checked_at = began, began_at
            return self._hooks
        self._hooks, self._version = hooks, version
        self._checked, self._checked_at = began, began_at
        return hooks

    async def subscribed(self, event_type: str, since: float | None = None) -> list[Hook]:
        return [hook for hook in await self.hooks(since) if event_type in hook.events]

    async def get(self, webhook_id: uuid.UUID) -> Hook | None:
        return next((hook for hook in await self.hooks() if hook.id == webhook_id), None)


async def offline(redis: Redis, users: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Those of `users` with no open WebSocket now (presence sets kept by the push processes)."""
    if not users:
        return []
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for user in users:
            pipe.zcount(presence.presence_key(user), now, "+inf")
        live = await pipe.execute()
    return [user for user, count in zip(users, live, strict=True) if not int(count)]


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Dispatcher:
    """Turns one published event into one `deliver_webhook` job per subscribed webhook."""

    def __init__(self, redis: Redis, registry: Registry, queue_name: str) -> None:
        self._redis = redis
        self.registry = registry
        self._queue = QueueWriter(redis, queue_name)

    async def dispatch(
        self,
        event: StoredEvent,
        recipients: Sequence[uuid.UUID],
        *,
        outbox: Outbox | None = None,
        source: str | None = None,
        since: float | None = None,
    ) -> int:
        """Enqueue the deliveries of `event` (staged in `outbox` when given); how many. `since`:
        the webhooks registered by then get it (by default, those registered by now)."""
        hooks = await self.registry.subscribed(event.type, time.time() if since is None else since)
        if not hooks:
            return 0
        payload = await self.body(event, recipients, source)
        tag = self._tag(event, source)
        jobs = [
            (
                f"{WEBHOOK_JOB_PREFIX}{tag}{delivery}",
                {"webhook_id": str(hook.id), "delivery_id": str(delivery), "event": payload},
            )
            for hook in hooks
            for delivery in [uuid.uuid5(_NAMESPACE, f"{payload['id']}:{hook.id}")]
        ]

        async def stage(pipe: Pipeline) -> None:
            for job_id, args in jobs:
                self._queue.stage(pipe, DELIVER_WEBHOOK, [args], job_id)

        if outbox is not None:
            outbox.append(stage)
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                await stage(pipe)
                await pipe.execute()
        metrics.WEBHOOKS_DISPATCHED.labels(event.type).inc(len(jobs))
        return len(jobs)

    def _tag(self, event: StoredEvent, source: str | None) -> str:
        """The queue shard of an event's deliveries (`chat.jobqueue.shards`; "" on one Redis): the
        publishing job's, whose id carries it, else (the api's own events) the conversation's."""
        shards = self._queue.shards
        if not shards.tagged:
            return ""
        return shards.tag(shards.shard_of_job(source)) if source else shards.tag_of(event.conversation_id)

    async def body(
        self, event: StoredEvent, recipients: Sequence[uuid.UUID], source: str | None
    ) -> dict[str, Any]:
        """The delivery's JSON: `{id, type, created_at, data}`, the same for every webhook."""
        event_id = uuid.uuid5(_NAMESPACE, f"{source}:{event.type}") if source else uuid.uuid4()
        data: dict[str, Any] = event.data.model_dump(mode="json")
        # A receiver gets one request per event, not the WebSocket frame's envelope: data names the
        # conversation where the event's own data does not (reactions, participants, read markers).
        data.setdefault("conversation_id", str(event.conversation_id))
        if isinstance(event, MessageCreated):
            # For mobile push: who would not see the message live. Asked only when a webhook wants it.
            others = [user for user in recipients if user != event.data.sender_id]
            away = [str(user) for user in await offline(self._redis, others)]
            data["offline_recipient_ids"] = away
            data["recipient_offline"] = bool(away)  # the flag alone, for a receiver that needs no more
        return {"id": str(event_id), "type": event.type, "created_at": _iso_now(), "data": data}


class WebhookPublisher:
    """A Publisher that, after publishing an event to its recipients, dispatches it to webhooks.

    `outbox`: the publishing job's (ChatWorker), so the deliveries are enqueued in the transaction
    that finishes it; without one (the api, the stock arq worker) they are enqueued right after
    the publish, and a crash between the two loses the deliveries of that one event.
    `since`: when the publishing job was enqueued (unix seconds); every webhook registered by then
    gets its events (without one: every webhook registered by the time of the publish).
    """

    def __init__(
        self,
        inner: Publisher,
        dispatcher: Dispatcher,
        *,
        outbox: Outbox | None = None,
        source: str | None = None,
        since: float | None = None,
    ) -> None:
        self._inner = inner
        self._dispatcher = dispatcher
        self._outbox = outbox
        self._source = source
        self._since = since

    async def publish(self, event: StoredEvent, recipients: Iterable[uuid.UUID]) -> Sequence[str]:
        users = list(dict.fromkeys(recipients))
        ids = await self._inner.publish(event, users)
        await self._dispatcher.dispatch(
            event, users, outbox=self._outbox, source=self._source, since=self._since
        )
        return ids

    async def publish_many(self, batch: Sequence[tuple[StoredEvent, Sequence[uuid.UUID]]]) -> None:
        await self._inner.publish_many(batch)
        # One event published to several audiences in a row (the user it names, then the rest:
        # chat.usecases.participants.announce) is one event to a webhook, with every recipient.
        merged: list[tuple[StoredEvent, list[uuid.UUID]]] = []
        for event, recipients in batch:
            if merged and merged[-1][0] is event:
                merged[-1][1].extend(recipients)
            else:
                merged.append((event, list(recipients)))
        for event, recipients in merged:
            await self._dispatcher.dispatch(event, recipients, outbox=self._outbox, since=self._since)

    async def publish_ephemeral(self, event: Typing, recipients: Iterable[uuid.UUID]) -> None:
        await self._inner.publish_ephemeral(event, recipients)
