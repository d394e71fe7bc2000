"""Message search as a reader asks it: their conversations (or one of them), best first, each
message as they see it (chat.domain.search builds the query)."""

from __future__ import annotations

import uuid

from chat.domain import reading, search
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.schemas import MessageOut
from chat.usecases.conversations import require_participant


async def messages(
    sessions: Sessions,
    storage: Storage,
    me: uuid.UUID,
    text: str,
    limit: int,
    after: search.Position | None,
    within: uuid.UUID | None,
) -> tuple[list[MessageOut], str | None]:
    """A page of the messages matching `text`, never one of someone `me` blocked; 404 if `within`
    names a conversation `me` is not in. And the next page's cursor."""
    async with sessions() as session:
        if within is not None:
            await require_participant(session, within, me)
        dialect = session.get_bind().dialect.name
        if not search.has_terms(dialect, text):
            return [], None
        rows = (await session.execute(search.query(dialect, me, text, limit + 1, after, within))).all()
        page = rows[:limit]
        items = await reading.as_read(session, [MessageOut.model_validate(m) for m, _ in page], me, storage)
    cursor = None
    if len(rows) > limit:
        last, rank = page[-1]
        cursor = search.Position(rank, last.created_at, last.id).cursor()
    return items, cursor
