"""Reactions: add or take back one emoji on a message. Idempotent; a worker stores the change in
the order it was accepted and announces it with `reaction.added` or `reaction.removed`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chat.domain import blocks, reactions
from chat.errors import Conflict, Forbidden, field_error
from chat.infra.db import Sessions
from chat.jobqueue.accept import Enqueuer
from chat.jobqueue.jobs import REACT, React, change_job_id
from chat.usecases.messages import visible


async def add(sessions: Sessions, queue: Enqueuer, me: uuid.UUID, mid: uuid.UUID, emoji: str) -> None:
    await _change(sessions, queue, me, mid, emoji, present=True)


async def remove(sessions: Sessions, queue: Enqueuer, me: uuid.UUID, mid: uuid.UUID, emoji: str) -> None:
    await _change(sessions, queue, me, mid, emoji, present=False)


async def _change(
    sessions: Sessions, queue: Enqueuer, me: uuid.UUID, mid: uuid.UUID, emoji: str, *, present: bool
) -> None:
    async with sessions() as session:
        message, _ = await visible(session, me, mid)
        if not reactions.valid_emoji(emoji):
            raise field_error(
                "path.emoji",
                "An emoji is 1 to 32 visible characters in UTF-8, none of them whitespace "
                "(zero width joiners and tag characters of emoji sequences are fine), not only "
                "dots, and none of / \\ ? # %.",
            )
        if present and message.deleted:
            raise Conflict("The message was deleted.")
        # Taking a reaction back stays possible; adding one is a message to the blocker.
        if present and await session.scalar(blocks.refused(message.conversation_id, me)):
            raise Forbidden(blocks.BLOCKED)
    payload = React(
        message_id=message.id,
        conversation_id=message.conversation_id,
        user_id=me,
        emoji=emoji,
        present=present,
        changed_at=datetime.now(UTC),
    )
    await queue.enqueue(
        REACT, payload, change_job_id("react", message.id, queue.tag_of(message.conversation_id))
    )
