"""A participant's own state in a conversation: how far they have read (announced to the others),
their settings (muted), and that they are typing (ephemeral, rate limited, never stored)."""

from __future__ import annotations

import math
import uuid

from redis.asyncio import Redis
from sqlalchemy import func, select, update

from chat.domain import blocks
from chat.domain.blocks import BLOCKED
from chat.domain.sequence import Sequencer
from chat.errors import Forbidden, TooManyRequests
from chat.infra.db import Sessions
from chat.models import Participant
from chat.realtime import presence
from chat.realtime.eventbus import Publisher
from chat.realtime.events import ConversationRead, ReadMarker, Typing, UserRef
from chat.usecases.conversations import (
    LARGE_GROUP_MEMBERS,
    conversation_of,
    participant_ids,
    require_participant,
)

# One typing frame per user per room per this many seconds, whatever TYPING_INTERVAL_SECONDS says.
ROOM_TYPING_SECONDS = 3.0


async def mark_read(
    sessions: Sessions, sequencer: Sequencer, publisher: Publisher, me: uuid.UUID, cid: uuid.UUID, seq: int
) -> None:
    """Move my read marker forward to `seq` (never back); the others hear of a move."""
    async with sessions() as session:
        conversation = await conversation_of(session, cid, me)
        # Never past the newest message accepted: a marker beyond it would hide future messages.
        newest = max(conversation.last_seq, await sequencer.current(cid) or 0)
        seq = min(seq, newest)
        moved = await session.execute(
            update(Participant)
            .where(
                Participant.conversation_id == cid,
                Participant.user_id == me,
                Participant.last_read_seq < seq,
            )
            .values(last_read_seq=seq)
        )
        await session.commit()
        recipients = await participant_ids(session, cid) if moved.rowcount else []  # type: ignore[attr-defined]
    if recipients:
        await publisher.publish(
            ConversationRead(conversation_id=cid, data=ReadMarker(user_id=me, seq=seq)), recipients
        )


async def set_muted(sessions: Sessions, me: uuid.UUID, cid: uuid.UUID, muted: bool) -> None:
    """My own setting: a muted conversation counts nothing as unread for me."""
    async with sessions() as session:
        await conversation_of(session, cid, me)
        await session.execute(
            update(Participant)
            .where(Participant.conversation_id == cid, Participant.user_id == me)
            .values(muted=muted)
        )
        await session.commit()


async def typing(
    sessions: Sessions, redis: Redis, publisher: Publisher, interval: float, me: uuid.UUID, cid: uuid.UUID
) -> None:
    """Tell the others `me` is typing: at most once per `interval` seconds (429 sooner), and in a
    room (LARGE_GROUP_MEMBERS or more) at most once per ROOM_TYPING_SECONDS."""
    async with sessions() as session:
        await require_participant(session, cid, me)
        if await session.scalar(blocks.refused(cid, me)):
            raise Forbidden(BLOCKED)
        members = await session.scalar(
            select(func.count()).select_from(Participant).where(Participant.conversation_id == cid)
        )
        # A room's typing frame goes to every member: thousands of frames a keystroke burst.
        if (members or 0) >= LARGE_GROUP_MEMBERS:
            interval = max(interval, ROOM_TYPING_SECONDS)
        wait_ms = await presence.typing_slot(redis, cid, me, interval)
        if wait_ms is not None:
            raise TooManyRequests(
                "Typing notifications are limited to one per interval per conversation.",
                retry_after=math.ceil(max(wait_ms, 1) / 1000),
            )
        # Read only once the slot is taken: a refused call in a room reads no member list.
        recipients = [u for u in await participant_ids(session, cid) if u != me]
    await publisher.publish_ephemeral(Typing(conversation_id=cid, data=UserRef(user_id=me)), recipients)
