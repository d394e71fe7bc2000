"""arq job functions: open a session, write through `store`, commit, then publish the event.

The publish is staged in the job's outbox and runs in the transaction that finishes the job
(`workers.runtime.finish`), so it follows the commit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import attachments, reading
from chat.domain.webhooks import WebhookPublisher
from chat.infra import metrics, tracing
from chat.infra.failures import describe, is_transient
from chat.jobqueue.jobs import DeleteMessage, EditMessage, PersistMessage, React, Retry
from chat.models import Message
from chat.realtime.eventbus import Publisher, RedisPublisher
from chat.realtime.events import (
    MessageCreated,
    MessageDeleted,
    MessageUpdated,
    ReactionAdded,
    ReactionRef,
    ReactionRemoved,
)
from chat.schemas import MessageOut
from workers import store
from workers.batch import PersistBatcher
from workers.context import JobContext

log = logging.getLogger("workers.tasks")

Ctx = JobContext
Task = Callable[[JobContext, dict[str, Any]], Awaitable[str]]


def backoff(job_try: int) -> float:
    """0.2 s, 0.4 s, 0.8 s ... capped at 30 s: rides out a restart of Postgres or Redis."""
    return float(min(0.2 * 2 ** (job_try - 1), 30.0))


def job(fn: Task) -> Task:
    """Retry transient failures with back-off; let anything else fail the job for good (the worker
    records the dead letter, `workers.runtime.finish`).

    A failure that is a dependency being away spends no try whatever this says: the worker gives
    the try back and defers the job (`workers.runtime.run`, `_wait_out`)."""

    @functools.wraps(fn)
    async def run(ctx: Ctx, payload: dict[str, Any]) -> str:
        outages = ctx["outages"]
        try:
            result = await fn(ctx, payload)
        except Retry:
            raise  # the job asked for its own retry (a webhook delivery): not a failure
        except Exception as exc:
            tries = int(ctx.get("job_try", 1))
            if is_transient(exc) and tries < ctx["max_tries"]:
                # One line when a dependency goes away and one when it is back, not one per job.
                outages.down(exc)
                raise Retry(defer=backoff(tries)) from exc
            if isinstance(exc, attachments.NotUploaded) and tries < ctx["max_tries"]:
                # The api saw the object; a store that lags (or an object deleted since) may yet
                # have it. Retried like an outage, and dead-lettered after the last try.
                log.warning("job %s: %s (try %d)", ctx.get("job_id"), describe(exc), tries)
                raise Retry(defer=backoff(tries)) from exc
            raise
        outages.up()
        return result

    return run


def publisher(ctx: Ctx) -> Publisher:
    """The job's publisher: staged in the finishing transaction; webhook deliveries of its event
    join the same transaction (chat.domain.webhooks)."""
    direct: RedisPublisher = ctx["publisher"]
    outbox = ctx["outbox"]
    inner: Publisher = direct.staged(outbox)
    dispatcher = ctx.get("webhooks")
    if dispatcher is None:
        return inner
    enqueued = ctx.get("enqueue_time")
    since = enqueued.timestamp() if enqueued is not None else None
    return WebhookPublisher(inner, dispatcher, outbox=outbox, source=ctx.get("job_id"), since=since)


@job
async def persist_message(ctx: Ctx, payload: dict[str, Any]) -> str:
    batcher: PersistBatcher = ctx["batcher"]
    first_try = int(ctx.get("job_try", 1)) == 1
    command = PersistMessage.model_validate(payload)
    files = []
    if command.attachments and command.sender_id is not None:  # a system message has no files
        # Checked before anything is stored: a message is stored with its attachments or not at all.
        storage = ctx["storage"]
        found = await attachments.ready(
            ctx["sessions"], storage, command.attachments, command.sender_id, command.message_id
        )
        files = attachments.shown(found, storage)
    with tracing.span("store"):  # waiting for the group commit, and the commit
        message, recipients = await batcher.persist(command, first_try=first_try)
    if files and not message.deleted:
        message = message.model_copy(update={"attachments": files})
    event = MessageCreated(conversation_id=message.conversation_id, data=message)
    await publisher(ctx).publish(event, recipients)
    metrics.EVENTS_PUBLISHED.labels(event.type).inc(len(recipients))
    return f"stored seq {message.seq}"


@job
async def edit_message(ctx: Ctx, payload: dict[str, Any]) -> str:
    command = EditMessage.model_validate(payload)
    changed = await _change(ctx, lambda session: store.edit_message(session, command), MessageUpdated)
    return "edited" if changed else "superseded"


@job
async def delete_message(ctx: Ctx, payload: dict[str, Any]) -> str:
    command = DeleteMessage.model_validate(payload)
    changed = await _change(ctx, lambda session: store.delete_message(session, command), MessageDeleted)
    return "deleted" if changed else "no such message"


@job
async def react(ctx: Ctx, payload: dict[str, Any]) -> str:
    command = React.model_validate(payload)
    async with ctx["sessions"]() as session:
        changed = await store.react(session, command)
        members = await store.recipients(session, [command.conversation_id]) if changed else {}
        await session.commit()
    if not changed:
        return "unchanged"
    kind = ReactionAdded if command.present else ReactionRemoved
    data = ReactionRef(message_id=command.message_id, emoji=command.emoji, user_id=command.user_id)
    event = kind(conversation_id=command.conversation_id, data=data)
    users = members.get(command.conversation_id, [])
    await publisher(ctx).publish(event, users)
    metrics.EVENTS_PUBLISHED.labels(event.type).inc(len(users))
    return "added" if command.present else "removed"


async def _change(
    ctx: Ctx,
    write: Callable[[AsyncSession], Awaitable[Message | None]],
    event: type[MessageUpdated] | type[MessageDeleted],
) -> bool:
    """Apply one edit or delete, commit, then publish the message's new state to its participants."""
    async with ctx["sessions"]() as session:
        message = await write(session)
        if message is None:
            return False
        members = await store.recipients(session, [message.conversation_id])
        # The message's state for everyone alike: its reactions counted, `me` false.
        [state] = await reading.as_read(session, [MessageOut.model_validate(message)], None, ctx["storage"])
        await session.commit()
    users = members.get(message.conversation_id, [])
    published = event(conversation_id=message.conversation_id, data=state)
    await publisher(ctx).publish(published, users)
    metrics.EVENTS_PUBLISHED.labels(published.type).inc(len(users))
    return True
