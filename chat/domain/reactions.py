"""Reactions as readers see them: per message, each emoji with its count and whether the reader
is among those who reacted so."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat.models import Reaction
from chat.schemas import ReactionOut

MAX_EMOJI = 32
# Invisible, yet part of emoji: ZERO WIDTH JOINER (👩‍💻, families, the rainbow flag) and the tag
# characters of subdivision flags (England, Scotland, Wales).
_JOINING = "\u200d" + "".join(map(chr, range(0xE0020, 0xE0080)))


# An emoji is a path segment in `/messages/{id}/reactions/{emoji}`: clients build that URL, so
# one that a URL would read as something else (`..`, a `/`, a query, a fragment, an escape)
# could turn taking the reaction back into `DELETE /messages/{id}`.
_URL_SPECIAL = frozenset("/\\?#%")


def valid_emoji(emoji: str) -> bool:
    """1 to 32 characters, visible ones: no whitespace, no control or format characters but the
    joiner and tag characters emoji sequences are built with, and no U+FFFD (what invalid UTF-8
    in the path decodes to); nothing a URL path reads specially (only dots, `/ \\ ? # %`)."""
    if not 1 <= len(emoji) <= MAX_EMOJI or "\ufffd" in emoji or not emoji.strip(_JOINING):
        return False
    if not emoji.strip(".") or not _URL_SPECIAL.isdisjoint(emoji):
        return False
    return all((c.isprintable() or c in _JOINING) and not c.isspace() for c in emoji)


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
