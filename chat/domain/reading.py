"""Messages as a reader sees them: with their reactions (and whether the reader is among them),
their mentions and their attachments, whose download URLs are presigned for this read (a deleted
message shows none of the three). The api reads them so for history, threads, search and single messages; the
worker for the messages its `message.updated` and `message.deleted` events carry (no reader)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import attachments, mentions, reactions
from chat.infra.storage import Storage
from chat.schemas import MessageOut


async def as_read(
    db: AsyncSession, messages: Sequence[MessageOut], reader: uuid.UUID | None, storage: Storage
) -> list[MessageOut]:
    # A deleted message keeps its place in history and nothing else: no reactions, mentions or files.
    ids = [m.id for m in messages if not m.deleted]
    found, named = await reactions.counts(db, ids, reader), await mentions.of(db, ids)
    files = await attachments.of(db, ids)
    return [
        m.model_copy(
            update={
                "reactions": found.get(m.id, []),
                "mentions": named.get(m.id, []),
                "attachments": attachments.shown(files.get(m.id, []), storage),
            }
        )
        for m in messages
    ]
