"""Group commit: the persist jobs one worker runs at the same time share one transaction.

arq runs up to `max_jobs` jobs concurrently, one message each. Rather than one transaction and
one publish per message, each job hands its message to this batcher and waits; whatever arrived
while the previous batch was being written is written next, in one multi-row insert and one
commit, then published in one Redis round trip. Under load batches grow by themselves; when idle
a batch is a single message and nothing waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat import metrics
from chat.eventbus import Publisher
from chat.events import MessageCreated
from chat.jobs import PersistMessage
from chat.schemas import MessageOut
from chat.sequence import Sequencer
from workers import store

log = logging.getLogger("workers.batch")

Pending = tuple[PersistMessage, "asyncio.Future[MessageOut]"]


class PersistBatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        sequencer: Sequencer,
        *,
        is_transient: Callable[[BaseException], bool],
        max_batch: int = 200,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._sequencer = sequencer
        self._is_transient = is_transient
        self._max_batch = max_batch
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def persist(self, command: PersistMessage) -> MessageOut:
        """Store and publish one message; returns once it is committed and published."""
        future: asyncio.Future[MessageOut] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # Yield once so that jobs started in the same loop iteration join the first batch.
        await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            await self._flush(batch)

    async def _flush(self, batch: list[Pending]) -> None:
        try:
            results = await self._write([command for command, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not self._is_transient(exc):
                # One bad message must not fail its neighbours: write each on its own.
                log.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
                for item in batch:
                    await self._flush([item])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), message in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(message)

    async def _write(self, commands: list[PersistMessage]) -> list[MessageOut]:
        async with self._sessions() as session:
            messages = await store.persist_messages(session, commands, self._sequencer)
            members = await store.recipients(session, [m.conversation_id for m in messages])
            await session.commit()
        # Only after commit: a crash between the two makes arq re-run the jobs, which find their
        # rows and publish again. Clients de-duplicate by event_id and message id.
        events = [
            (MessageCreated(conversation_id=m.conversation_id, data=m), members.get(m.conversation_id, []))
            for m in _unique(messages)
        ]
        await self._publisher.publish_many(events)
        metrics.EVENTS_PUBLISHED.labels("message.created").inc(sum(len(users) for _, users in events))
        return messages


def _unique(messages: list[MessageOut]) -> list[MessageOut]:
    # The same message twice in one batch (a job and its retry) is published once.
    seen: dict[object, MessageOut] = {}
    for message in messages:
        seen.setdefault(message.id, message)
    return list(seen.values())
