"""Export (`GET /server/users/{external_id}/export`): everything of a user's as JSON, for a data
protection request. Their profile, conversations and blocks come on every page; their messages,
as readers see them (reactions, mentions, attachments), are paged oldest first with a cursor.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import cursors, reading
from chat.errors import NotFound, field_error
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.models import Block, Conversation, Message, Participant, User
from chat.schemas import MessageOut

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


async def export_user(
    sessions: Sessions,
    user_id: uuid.UUID,
    cursor: str | None,
    limit: int = DEFAULT_LIMIT,
    *,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """`{user, conversations, blocks, messages, next_cursor}`; a cursor this did not write is a
    422 naming `query.cursor`. Without `storage`, attachments come without download URLs."""
    after = _position(cursor)
    limit = max(1, min(limit, MAX_LIMIT))
    async with sessions() as session:
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound("No such user.")
        query = select(Message).where(Message.sender_id == user_id)
        if after is not None:
            at, key = after
            query = query.where(or_(Message.created_at > at, (Message.created_at == at) & (Message.id > key)))
        rows = list(await session.scalars(query.order_by(Message.created_at, Message.id).limit(limit + 1)))
        page, more = rows[:limit], len(rows) > limit
        messages = await _as_read(session, [MessageOut.model_validate(m) for m in page], storage)
        return {
            "user": _profile(user),
            "conversations": await _conversations(session, user_id),
            "blocks": await _blocks(session, user_id),
            "messages": messages,
            "next_cursor": cursors.encode_at(page[-1].created_at, page[-1].id) if more else None,
        }


def _position(cursor: str | None) -> tuple[Any, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        return cursors.decode_at(cursor)
    except ValueError:
        raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None


def _profile(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "display_name": user.display_name,
        "external_id": user.external_id,
        "metadata": user.app_metadata,
        "created_at": user.created_at.isoformat(),
        "deactivated_at": user.deactivated_at.isoformat() if user.deactivated_at else None,
        "erased_at": user.erased_at.isoformat() if user.erased_at else None,
    }


async def _conversations(session: AsyncSession, user_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Conversation, Participant)
        .join(Participant, Participant.conversation_id == Conversation.id)
        .where(Participant.user_id == user_id)
        .order_by(Participant.joined_at, Conversation.id)
    )
    return [
        {
            "id": str(c.id),
            "kind": c.kind,
            "title": c.title,
            "external_id": c.external_id,
            "metadata": c.app_metadata,
            "created_at": c.created_at.isoformat(),
            "role": p.role,
            "joined_at": p.joined_at.isoformat(),
            "last_read_seq": p.last_read_seq,
            "muted": p.muted,
        }
        for c, p in rows
    ]


async def _blocks(session: AsyncSession, user_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await session.scalars(select(Block).where(Block.blocker_id == user_id).order_by(Block.created_at))
    return [{"user_id": str(b.blocked_id), "created_at": b.created_at.isoformat()} for b in rows]


async def _as_read(
    session: AsyncSession, messages: list[MessageOut], storage: Storage | None
) -> list[dict[str, Any]]:
    if storage is not None:
        return [m.model_dump(mode="json") for m in await reading.as_read(session, messages, None, storage)]
    # No store to sign URLs with: each attachment as what it is, without a download link.
    read = await reading.as_read(session, messages, None, _Unsigned())  # type: ignore[arg-type]
    return [_no_urls(m.model_dump(mode="json")) for m in read]


def _no_urls(message: dict[str, Any]) -> dict[str, Any]:
    message["attachments"] = [{k: v for k, v in a.items() if k != "url"} for a in message["attachments"]]
    return message


class _Unsigned:
    def presign_get(self, upload_id: uuid.UUID, filename: str) -> str:
        return ""
