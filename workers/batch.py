"""Group commit: the persist jobs one worker runs at the same time share one transaction.

A worker runs up to `max_jobs` jobs concurrently, one message each. Rather than one transaction
per message, each job hands its message to this batcher and waits; whatever arrived while the
previous batch was being written is written next, in one multi-row insert and one commit. Each
job then publishes its own event, which ChatWorker writes in the transaction that finishes the
jobs. Under load batches grow by themselves; when idle a batch is a single message and nothing
waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.domain import attachments, mentions
from chat.domain.sequence import Sequencer
from chat.infra.failures import describe
from chat.jobqueue.jobs import PersistMessage
from chat.schemas import MessageOut
from workers import store

log = logging.getLogger("workers.batch")

Stored = tuple[MessageOut, list[uuid.UUID]]  # the message as stored, and who receives its event
Pending = tuple[PersistMessage, bool, "asyncio.Future[Stored]"]


@dataclass(slots=True)
class PersistBatcher:
    sessions: async_sessionmaker[AsyncSession]
    sequencer: Sequencer
    _: KW_ONLY
    is_transient: Callable[[BaseException], bool]
    timeout_seconds: float
    max_batch: int = 200
    _pending: list[Pending] = field(default_factory=list, init=False, repr=False)
    _flusher: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def persist(self, command: PersistMessage, *, first_try: bool) -> Stored:
        """Store one message; returns once it is committed, with the participants to publish to."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending.append((command, first_try, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # Yield once so that jobs started in the same loop iteration join the first batch.
        await asyncio.sleep(0)
        while self._pending:
            # By seq within a conversation: jobs enqueued in one millisecond are claimed in job id
            # order, and the futures resolve (so the jobs finish and publish) in batch order.
            self._pending.sort(key=lambda pending: (pending[0].conversation_id, pending[0].seq))
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            await self._flush(batch)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush(self, batch: list[Pending]) -> None:
        try:
            # A write that hangs (a database that stopped answering) fails the batch as transient,
            # instead of holding up every later message on this worker behind it.
            async with asyncio.timeout(self.timeout_seconds):
                results = await self._write([(command, first_try) for command, first_try, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not self.is_transient(exc):
                # One bad message must not fail its neighbours: write each on its own.
                log.warning("batch of %d failed (%s); retrying one by one", len(batch), describe(exc))
                for item in batch:
                    await self._flush([item])
                return
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), message in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(message)

    async def _write(self, commands: list[tuple[PersistMessage, bool]]) -> list[Stored]:
        async with self.sessions() as session:
            stored, members = await store.persist_batch(session, [c for c, _ in commands], self.sequencer)
            # Resolved once stored (and again, to the same rows, when a job runs again).
            named = await mentions.record(session, [message for message, _ in stored])
            # The uploads the api claimed, linked again in the same transaction: a no-op unless the
            # claim was released meanwhile, and harmless when a retried job runs it again.
            await attachments.link(
                session,
                [
                    (c.message_id, c.sender_id, c.attachments)
                    for c, _ in commands
                    if c.attachments and c.sender_id is not None  # a system message has no files
                ],
            )
            await session.commit()
        stored = [
            (m.model_copy(update={"mentions": named[m.id]}) if m.id in named else m, e) for m, e in stored
        ]
        results: list[Stored] = []
        for (command, first_try), (message, existed) in zip(commands, stored, strict=True):
            # Found stored under another seq on a first try: a client_id repeated after its claim
            # expired. The message was announced when it was stored; it gets no second event.
            repeat = existed and first_try and message.seq != command.seq
            results.append((message, [] if repeat else members.get(message.conversation_id, [])))
        return results
