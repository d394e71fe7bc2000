"""@username mentions: resolved by the worker when a message is stored, read with every message.

Only participants of the message's conversation are mentioned (a name that is nobody there is
plain text); naming oneself never counts as unread. Mentions are resolved once, when the message
is stored: an edit does not change them. Resolution is idempotent, so a job that runs again
records nothing twice.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat.infra.db import upsert_insert
from chat.models import Mention, Message, Participant, User
from chat.schemas import MessageOut

# A username (3-32 of letters, digits, _ . -) after an @ that does not continue a word or an address.
_MENTION = re.compile(r"(?<![\w.@-])@([A-Za-z0-9_.-]{3,32})")


def names_in(body: str | None) -> list[tuple[int, str]]:
    """(position, lowercased name) for each @name, first appearance only; a name that ends a
    sentence ("@bob.") is tried without its trailing punctuation too."""
    found: dict[str, int] = {}
    for match in _MENTION.finditer(body or ""):
        name = match.group(1).lower()
        for candidate in (name, name.rstrip(".-")):
            if len(candidate) >= 3:
                found.setdefault(candidate, match.start())
    return sorted((position, name) for name, position in found.items())


async def record(session: AsyncSession, messages: Sequence[MessageOut]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Resolve and store the mentions of stored messages; each message's mentioned user ids."""
    named = {m.id: names_in(m.body) for m in messages if m.body and "@" in m.body}
    named = {mid: names for mid, names in named.items() if names}
    if not named:
        return {}
    by_id = {m.id: m for m in messages}
    conversations = {by_id[mid].conversation_id for mid in named}
    keys = {name for names in named.values() for _, name in names}
    rows = await session.execute(
        select(Participant.conversation_id, User.username_key, User.id)
        .join(User, User.id == Participant.user_id)
        .where(Participant.conversation_id.in_(conversations), User.username_key.in_(keys))
    )
    members = {(cid, key): uid for cid, key, uid in rows}
    values: list[dict[str, Any]] = []
    mentioned: dict[uuid.UUID, list[uuid.UUID]] = {}
    for mid, names in named.items():
        message = by_id[mid]
        users: list[uuid.UUID] = []
        for position, name in names:
            uid = members.get((message.conversation_id, name))
            if uid is not None and uid not in users:
                users.append(uid)
                values.append(
                    {
                        "message_id": mid,
                        "user_id": uid,
                        "conversation_id": message.conversation_id,
                        "seq": message.seq,
                        "position": position,
                    }
                )
        if users:
            mentioned[mid] = users
    if values:
        connection = await session.connection()
        await connection.execute(upsert_insert(session)(Mention).on_conflict_do_nothing(), values)
    return mentioned


async def of(
    db: AsyncSession | AsyncConnection, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The mentioned user ids of each message, in the order the body names them."""
    if not message_ids:
        return {}
    rows = await db.execute(
        select(Mention.message_id, Mention.user_id)
        .where(Mention.message_id.in_(set(message_ids)))
        .order_by(Mention.message_id, Mention.position)
    )
    found: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for mid, uid in rows:
        found[mid].append(uid)
    return found


def unread_query(viewer: uuid.UUID, conversation_ids: Sequence[uuid.UUID], mine: Any) -> Any:
    """Per conversation, the viewer's mentions past their read marker (`mine`: their participant rows)."""
    return (
        select(Mention.conversation_id, func.count())
        .join(mine, (mine.c.conversation_id == Mention.conversation_id) & (mine.c.user_id == viewer))
        .join(Message, Message.id == Mention.message_id)
        .where(
            Mention.user_id == viewer,
            Mention.conversation_id.in_(conversation_ids),
            Mention.seq > mine.c.last_read_seq,
            Message.deleted.is_(False),
            Message.sender_id != viewer,  # naming oneself is never news to oneself
        )
        .group_by(Mention.conversation_id)
    )
