"""The one place messages are written. Every write is idempotent, so a retried job stores nothing twice."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from chat.jobs import DeleteMessage, EditMessage, PersistMessage
from chat.models import Conversation, Message, Participant
from chat.sequence import Sequencer, persisted_max_seq

# How often a lost counter may hand out a taken number before the job gives up (and retries later).
MAX_RESEQUENCE = 5


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def persist_message(session: AsyncSession, job: PersistMessage, sequencer: Sequencer) -> Message:
    """Store the message under its seq; returns the stored row (already there on a retry)."""
    existing = await session.get(Message, job.message_id)
    if existing is not None:
        return existing
    seq = job.seq
    for _ in range(MAX_RESEQUENCE):
        inserted = await session.scalar(
            _insert(session)(Message)
            .values(
                id=job.message_id,
                conversation_id=job.conversation_id,
                seq=seq,
                sender_id=job.sender_id,
                body=job.body,
                client_id=job.client_id,
                created_at=job.created_at,
                edited_at=None,
                deleted=False,
            )
            .on_conflict_do_nothing()
            .returning(Message.id)
        )
        if inserted is not None:
            break
        existing = await session.get(Message, job.message_id)
        if existing is not None:  # another worker stored this very message a moment ago
            return existing
        # The seq belongs to another message: the Redis counter was lost and restarted too low.
        await sequencer.raise_to(job.conversation_id, await persisted_max_seq(session, job.conversation_id))
        seq = await sequencer.next(job.conversation_id)
    else:
        raise RuntimeError(f"could not find a free seq for message {job.message_id}")

    await session.execute(
        update(Conversation)
        .where(Conversation.id == job.conversation_id)
        .values(
            last_seq=case((Conversation.last_seq < seq, seq), else_=Conversation.last_seq),
            last_activity_at=case(
                (Conversation.last_activity_at < job.created_at, job.created_at),
                else_=Conversation.last_activity_at,
            ),
        )
    )
    message = await session.get(Message, job.message_id, populate_existing=True)
    assert message is not None
    return message


async def edit_message(session: AsyncSession, job: EditMessage) -> Message | None:
    """Apply an edit unless a newer one or a delete won; the message if this edit is its current state."""
    await session.execute(
        update(Message)
        .where(
            Message.id == job.message_id,
            Message.deleted.is_(False),
            (Message.edited_at.is_(None)) | (Message.edited_at < job.edited_at),
        )
        .values(body=job.body, edited_at=job.edited_at)
    )
    message = await session.get(Message, job.message_id, populate_existing=True)
    if message is None or message.deleted or message.edited_at != job.edited_at:
        return None
    return message


async def delete_message(session: AsyncSession, job: DeleteMessage) -> Message | None:
    await session.execute(
        update(Message)
        .where(Message.id == job.message_id, Message.deleted.is_(False))
        .values(deleted=True, body=None)
    )
    return await session.get(Message, job.message_id, populate_existing=True)


async def recipients(session: AsyncSession, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        await session.scalars(
            select(Participant.user_id).where(Participant.conversation_id == conversation_id)
        )
    )
