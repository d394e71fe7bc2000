"""Messages as tests send, count and watch them: through the api, in Postgres, in a user's stream."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import func, select

from api.deps import Deps
from chat.models import Message
from chat.realtime import events
from chat.realtime.eventbus import stream_key
from chat.schemas import MessageOut
from tests.support import ApiClient, TestUser


def message_created(
    sender: uuid.UUID,
    seq: int,
    body: str,
    *,
    client_id: str | None = None,
    conversation_id: uuid.UUID | None = None,
    created_at: datetime | None = None,
) -> events.MessageCreated:
    """The `message.created` event of a new message, neither edited nor deleted (in a new
    conversation unless one is given, created now unless a time is given)."""
    message = MessageOut(
        id=uuid.uuid4(),
        conversation_id=conversation_id or uuid.uuid4(),
        seq=seq,
        sender_id=sender,
        body=body,
        client_id=client_id,
        created_at=created_at or datetime.now(UTC),
        edited_at=None,
        deleted=False,
    )
    return events.MessageCreated(conversation_id=message.conversation_id, data=message)


async def stream(redis: Redis, user_id: str) -> list[events.StoredEvent | events.Typing]:
    entries = await redis.xrange(stream_key(user_id))
    return [events.decode(fields[b"e"]) for _, fields in entries]


async def send(
    api: ApiClient, user: TestUser, cid: str, body: str, client_id: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"body": body}
    if client_id is not None:
        payload["client_id"] = client_id
    result = await api.post(f"/conversations/{cid}/messages", user, json=payload)
    assert result.status_code == 202, result.text
    accepted: dict[str, Any] = result.json
    return accepted


async def stored_count(deps: Deps, **where: Any) -> int:
    async with deps.sessions() as session:
        query = select(func.count()).select_from(Message)
        for column, value in where.items():
            query = query.where(getattr(Message, column) == value)
        return int(await session.scalar(query) or 0)
