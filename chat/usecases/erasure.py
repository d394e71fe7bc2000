"""Erasing a user (`DELETE /server/users/{external_id}`): deactivated at once, then a job
(`workers/erase.py`) removes what they left behind and keeps only the row's id, so that other
users' history still names a sender.

The job is one transaction and idempotent: each step selects only what is still there (messages
not yet deleted, reactions, rows), so running it again finds nothing, writes the same anonymous
row, and publishes nothing. Its events (`message.deleted`, `reaction.removed`,
`participant.removed`) go to the other participants after the commit, through the job's publisher.

Webhook deliveries already queued about the user are not searched for in the queue: the delivery
task asks `about_erased` first and drops them (see there).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import membership, reading
from chat.errors import NotFound
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.jobqueue.accept import Enqueuer
from chat.jobqueue.jobs import ERASE_USER, EraseUser, erase_job_id
from chat.models import Block, Mention, Message, Participant, Reaction, RefreshToken, Upload, User
from chat.realtime import usercontrol
from chat.realtime.eventbus import Publisher
from chat.realtime.events import (
    MessageDeleted,
    ParticipantRemoved,
    ReactionRef,
    ReactionRemoved,
    StoredEvent,
    UserRef,
)
from chat.schemas import MessageOut

ERASED_DISPLAY_NAME = "Deleted user"
Shown = list[tuple[uuid.UUID, uuid.UUID, str]]  # reactions readers saw: conversation, message, emoji


def erased_username(user_id: uuid.UUID) -> str:
    return f"deleted-{user_id.hex[:12]}"


async def request_erasure(sessions: Sessions, redis: Redis, queue: Enqueuer, user_id: uuid.UUID) -> str:
    """Deactivate the user now (their tokens are refused, their sockets close 4403) and queue the
    erasure; the job's id. Asking again enqueues nothing while that job is queued or kept."""
    async with sessions() as session:
        user = await session.get(User, user_id, with_for_update=True)
        if user is None:
            raise NotFound("No such user.")
        user.deactivated_at = user.deactivated_at or datetime.now(UTC)
        # Nothing of theirs may sign in again meanwhile.
        await session.execute(delete(RefreshToken).where(RefreshToken.user_id == user_id))
        await session.commit()
    await usercontrol.deactivated(redis, user_id)
    job_id = erase_job_id(user_id, queue.tag_of(user_id))
    await queue.enqueue(ERASE_USER, EraseUser(user_id=user_id), job_id)
    return job_id


@dataclass
class Erased:
    """What one run removed; all empty when it ran before."""

    messages: list[MessageOut] = field(default_factory=list)
    reactions: Shown = field(default_factory=list)
    left: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)  # conversation: the others

    @property
    def nothing(self) -> bool:
        return not (self.messages or self.reactions or self.left)


async def erase(
    sessions: Sessions, redis: Redis, publisher: Publisher, storage: Storage, user_id: uuid.UUID
) -> Erased | None:
    """Run the erasure; None when there is no such user."""
    async with sessions() as session:
        user = await session.get(User, user_id, with_for_update=True)
        if user is None:
            return None
        now = datetime.now(UTC)
        erased = Erased(left=await _others_by_conversation(session, user_id))
        erased.messages = await _delete_messages(session, user_id, now, storage)
        erased.reactions = await _remove_reactions(session, user_id)
        await _remove_memberships(session, user_id)
        await session.execute(
            update(Upload)
            .where(Upload.owner_id == user_id, Upload.discarded_at.is_(None))
            .values(discarded_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            delete(Block).where(or_(Block.blocker_id == user_id, Block.blocked_id == user_id))
        )
        await session.execute(delete(Mention).where(Mention.user_id == user_id))
        await session.execute(delete(RefreshToken).where(RefreshToken.user_id == user_id))
        _anonymise(user, now)
        await session.commit()
    if erased.left:
        # Blocks went too, which the direct conversations' mirrors hold: all are read afresh.
        await membership.changed(redis, *erased.left)
    await publisher.publish_many(_events(erased, user_id))
    return erased


def _anonymise(user: User, now: datetime) -> None:
    user.username = user.username_key = erased_username(user.id)
    user.display_name = ERASED_DISPLAY_NAME
    user.password_hash = user.external_id = None
    user.app_metadata = None
    user.is_admin = False
    user.deactivated_at = user.deactivated_at or now
    user.erased_at = user.erased_at or now


async def _others_by_conversation(
    session: AsyncSession, user_id: uuid.UUID
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Each conversation the user is in, with its other participants (who hear of the erasure)."""
    mine = select(Participant.conversation_id).where(Participant.user_id == user_id)
    rows = await session.execute(
        select(Participant.conversation_id, Participant.user_id).where(Participant.conversation_id.in_(mine))
    )
    others: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for conversation_id, member in rows:
        # A conversation of theirs alone is still one they leave: listed, with nobody to tell.
        listed = others[conversation_id]
        if member != user_id:
            listed.append(member)
    return dict(others)


async def _delete_messages(
    session: AsyncSession, user_id: uuid.UUID, now: datetime, storage: Storage
) -> list[MessageOut]:
    """Their messages not deleted yet become deleted, as a delete does (body gone, files to the
    sweep); the search column is generated from the body, so search no longer finds them."""
    rows = await session.scalars(
        update(Message)
        .where(Message.sender_id == user_id, Message.deleted.is_(False))
        .values(deleted=True, body=None)
        .returning(Message)
        .execution_options(synchronize_session=False)
    )
    messages = [MessageOut.model_validate(m) for m in rows]
    ids = [m.id for m in messages]
    if ids:
        await session.execute(
            update(Upload)
            .where(Upload.message_id.in_(ids), Upload.discarded_at.is_(None))
            .values(discarded_at=now)
            .execution_options(synchronize_session=False)
        )
    return await reading.as_read(session, messages, None, storage)


async def _remove_reactions(
    session: AsyncSession, user_id: uuid.UUID
) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """Their reactions go (the rows too: no count or `me` can include them again); those readers
    saw, with their messages' conversations."""
    shown = await session.execute(
        select(Message.conversation_id, Reaction.message_id, Reaction.emoji)
        .join(Message, Message.id == Reaction.message_id)
        .where(Reaction.user_id == user_id, Reaction.present.is_(True))
    )
    found: Shown = [(c, m, e) for c, m, e in shown]
    await session.execute(delete(Reaction).where(Reaction.user_id == user_id))
    return found


async def _remove_memberships(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Out of every conversation; a group they owned goes to its longest-standing member."""
    owned = list(
        await session.scalars(
            select(Participant.conversation_id).where(
                Participant.user_id == user_id, Participant.role == "owner"
            )
        )
    )
    await session.execute(delete(Participant).where(Participant.user_id == user_id))
    for conversation_id in owned:
        heir = await session.scalar(
            select(Participant)
            .where(Participant.conversation_id == conversation_id)
            .order_by(Participant.joined_at, Participant.user_id)
            .limit(1)
        )
        if heir is not None:
            heir.role = "owner"


def _events(erased: Erased, user_id: uuid.UUID) -> list[tuple[StoredEvent, Sequence[uuid.UUID]]]:
    """What the other participants hear, each in the conversations they share with the user."""
    left = erased.left
    batch: list[tuple[StoredEvent, Sequence[uuid.UUID]]] = []
    for message in erased.messages:
        batch.append(
            (
                MessageDeleted(conversation_id=message.conversation_id, data=message),
                _of(left, message.conversation_id),
            )
        )
    for conversation_id, message_id, emoji in erased.reactions:
        ref = ReactionRef(message_id=message_id, emoji=emoji, user_id=user_id)
        batch.append((ReactionRemoved(conversation_id=conversation_id, data=ref), _of(left, conversation_id)))
    for conversation_id, others in left.items():
        gone = ParticipantRemoved(conversation_id=conversation_id, data=UserRef(user_id=user_id))
        batch.append((gone, others))
    return [(event, users) for event, users in batch if users]


def _of(left: dict[uuid.UUID, list[uuid.UUID]], conversation_id: uuid.UUID) -> list[uuid.UUID]:
    return left.get(conversation_id, [])


async def about_erased(sessions: Sessions, event: dict[str, Any]) -> bool:
    """Whether a webhook delivery's event tells of an erased user's doings (their message, their
    reaction, their read marker): the delivery task drops those, so that nothing of theirs leaves
    after the erasure. The events that say something of theirs went (`message.deleted`,
    `reaction.removed`, `participant.removed`, which the erasure itself publishes) still go."""
    if event.get("type") in _TOMBSTONES:
        return False
    data = event.get("data")
    if not isinstance(data, dict):
        return False
    subjects = set()
    for key in ("sender_id", "user_id"):
        try:
            subjects.add(uuid.UUID(str(data[key])))
        except (KeyError, ValueError):
            continue
    if not subjects:
        return False
    async with sessions() as session:
        found = await session.scalar(
            select(User.id).where(User.id.in_(subjects), User.erased_at.is_not(None)).limit(1)
        )
    return found is not None


_TOMBSTONES = frozenset({"message.deleted", "reaction.removed", "participant.removed"})
