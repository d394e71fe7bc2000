"""Reactions as readers see them: per message, each emoji with its count and whether the reader
is among those who reacted so. `as_read` gives messages as a reader sees them, with their reactions
and their mentions: the api for history and single messages, the worker for the messages its
`message.updated` and `message.deleted` events carry (with no reader). Their attachments come
with download URLs presigned for this read; a deleted message shows none."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat import attachments, mentions
from chat.models import Reaction
from chat.schemas import MessageOut, ReactionOut
from chat.storage import Storage

MAX_EMOJI = 32


def valid_emoji(emoji: str) -> bool:
    """1 to 32 characters, none of them whitespace or unprintable."""
    return 1 <= len(emoji) <= MAX_EMOJI and emoji.isprintable() and not any(c.isspace() for c in emoji)


async def counts(
    db: AsyncSession | AsyncConnection, message_ids: Sequence[uuid.UUID], reader: uuid.UUID | None
) -> dict[uuid.UUID, list[ReactionOut]]:
    """Each message's reactions, in the order their emoji first appeared on it."""
    if not message_ids:
        return {}
    mine = func.max(case((Reaction.user_id == reader, 1), else_=0)) if reader is not None else None
    columns = [Reaction.message_id, Reaction.emoji, func.count(), func.min(Reaction.changed_at)]
    query = (
        select(*columns, *([mine] if mine is not None else []))
        .where(Reaction.message_id.in_(set(message_ids)), Reaction.present.is_(True))
        .group_by(Reaction.message_id, Reaction.emoji)
        .order_by(Reaction.message_id, func.min(Reaction.changed_at), Reaction.emoji)
    )
    found: dict[uuid.UUID, list[ReactionOut]] = defaultdict(list)
    rows: Sequence[Any] = (await db.execute(query)).all()
    for message_id, emoji, count, _first, *reader_reacted in rows:
        me = bool(reader_reacted[0]) if reader_reacted else False
        found[message_id].append(ReactionOut(emoji=emoji, count=int(count), me=me))
    return found


async def as_read(
    db: AsyncSession, messages: Sequence[MessageOut], reader: uuid.UUID | None, storage: Storage
) -> list[MessageOut]:
    """The messages as a reader sees them: with their reactions, mentions and attachments."""
    ids = [m.id for m in messages]
    found, named = await counts(db, ids, reader), await mentions.of(db, ids)
    files = await attachments.of(db, [m.id for m in messages if not m.deleted])
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
