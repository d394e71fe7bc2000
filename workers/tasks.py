"""arq job functions: open a session, write through `store`, commit, then publish the event."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from arq import Retry
from sqlalchemy.ext.asyncio import AsyncSession

from chat import deadletters, metrics
from chat.eventbus import Publisher
from chat.events import MessageDeleted, MessageUpdated
from chat.jobs import DeleteMessage, EditMessage, PersistMessage
from chat.models import Message
from chat.schemas import MessageOut
from workers import store
from workers.batch import PersistBatcher

log = logging.getLogger("workers.tasks")

Ctx = dict[str, Any]
Task = Callable[[Ctx, dict[str, Any]], Awaitable[str]]

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and socket errors
    TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and isinstance(exc.orig, TRANSIENT):
        return True
    return isinstance(exc, TRANSIENT)


def backoff(job_try: int) -> float:
    """0.2 s, 0.4 s, 0.8 s ... capped at 30 s: rides out a restart of Postgres or Redis."""
    return float(min(0.2 * 2 ** (job_try - 1), 30.0))


def job(fn: Task) -> Task:
    """Retry transient failures with back-off; dead-letter a job that fails for good."""

    @functools.wraps(fn)
    async def run(ctx: Ctx, payload: dict[str, Any]) -> str:
        started = time.perf_counter()
        name = fn.__name__
        try:
            result = await fn(ctx, payload)
        except Exception as exc:
            tries = int(ctx.get("job_try", 1))
            if is_transient(exc) and tries < ctx["max_tries"]:
                metrics.JOBS_FINISHED.labels(name, "retried").inc()
                log.warning("%s try %d failed (%s); retrying", ctx.get("job_id"), tries, exc)
                raise Retry(defer=backoff(tries)) from exc
            metrics.JOBS_FINISHED.labels(name, "failed").inc()
            log.exception("%s failed for good after %d tries", ctx.get("job_id"), tries)
            await deadletters.record(
                ctx["redis"], str(ctx.get("job_id")), name, [payload], f"{type(exc).__name__}: {exc}", tries
            )
            raise
        metrics.JOBS_FINISHED.labels(name, "complete").inc()
        metrics.JOB_SECONDS.labels(name).observe(time.perf_counter() - started)
        return result

    return run


@job
async def persist_message(ctx: Ctx, payload: dict[str, Any]) -> str:
    batcher: PersistBatcher = ctx["batcher"]
    message = await batcher.persist(PersistMessage.model_validate(payload))
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
        await session.commit()
    publisher: Publisher = ctx["publisher"]
    users = members.get(message.conversation_id, [])
    published = event(conversation_id=message.conversation_id, data=MessageOut.model_validate(message))
    await publisher.publish(published, users)
    metrics.EVENTS_PUBLISHED.labels(published.type).inc(len(users))
    return True
