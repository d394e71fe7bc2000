"""Who is in a group: add people, leave, remove someone (the owner). Each change re-seeds the
conversation's members in Redis and is announced to the participants."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import membership
from chat.errors import Forbidden, NotFound, ServiceUnavailable, field_error
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.models import Participant
from chat.realtime.eventbus import Publisher
from chat.realtime.events import ParticipantAdded, ParticipantRemoved, StoredEvent, UserRef
from chat.schemas import ConversationOut
from chat.usecases.conversations import (
    LARGE_GROUP_MEMBERS,
    MAX_PARTICIPANTS,
    conversation_of,
    conversation_view,
    participant_ids,
    require_group,
    require_users,
)

_PUBLISH_SLICE = 500


async def add(
    sessions: Sessions,
    redis: Redis,
    publisher: Publisher,
    storage: Storage,
    me: uuid.UUID,
    cid: uuid.UUID,
    user_ids: Sequence[uuid.UUID],
) -> ConversationOut:
    """Add users to a group `me` is in (idempotent); the conversation as it is afterwards."""
    async with sessions() as session:
        conversation = await conversation_of(session, cid, me)
        require_group(conversation, "body.user_ids", "Participants can only be added to group conversations.")
        wanted = list(dict.fromkeys(user_ids))
        await require_users(session, wanted, "body.user_ids")
        new = await _insert_new(session, cid, wanted)
        view = await conversation_view(session, cid, me, storage)
        recipients = await participant_ids(session, cid)
    await announce(redis, publisher, cid, recipients, added=new)
    return view


async def announce(
    redis: Redis,
    publisher: Publisher,
    cid: uuid.UUID,
    recipients: Sequence[uuid.UUID],
    *,
    added: Sequence[uuid.UUID] = (),
    removed: Sequence[uuid.UUID] = (),
) -> None:
    """After a membership change commits: the Redis mirror is re-read on the next send, and
    `recipients` (everyone in it before or after the change) hear who came and who went.

    Whoever came or went hears it in their own stream (it changes which rooms their push process
    fans out to them). The others hear it in one publish per change, which in a room is one entry
    in the room's stream (`chat.realtime.rooms`), not one per member. In a room (LARGE_GROUP_MEMBERS
    or more) a newcomer hears only of their own arrival, not of every other newcomer's: 10,000
    added at once would otherwise be 10^8 entries. The participants list over REST has them all.
    """
    if not (added or removed):
        return
    await membership.changed(redis, cid)
    newcomers = set(added)
    room = len(recipients) >= LARGE_GROUP_MEMBERS
    staying = [u for u in recipients if u not in newcomers]
    # Each change: its event to the user it names, then to the others (published as two, but one
    # event: a webhook hears it once, chat.domain.webhooks).
    changes: list[list[tuple[StoredEvent, Sequence[uuid.UUID]]]] = []
    for user in added:
        event = ParticipantAdded(conversation_id=cid, data=UserRef(user_id=user))
        audience = staying if room else [u for u in recipients if u != user]
        changes.append([(event, [user]), (event, audience)])
    gone = set(removed)
    for user in removed:
        left = ParticipantRemoved(conversation_id=cid, data=UserRef(user_id=user))
        others = [u for u in recipients if u not in gone] if room else [u for u in recipients if u != user]
        changes.append([(left, [user]), (left, others)])
    # Pipelined in slices: one round trip per slice instead of one per event, and no single
    # pipeline holding 10,000 script calls in memory at once. A change's two parts stay together.
    for start in range(0, len(changes), _PUBLISH_SLICE):
        await publisher.publish_many(
            [item for change in changes[start : start + _PUBLISH_SLICE] for item in change]
        )


async def _insert_new(session: AsyncSession, cid: uuid.UUID, wanted: list[uuid.UUID]) -> list[uuid.UUID]:
    """Insert those of `wanted` not in yet, and commit; the ones this call added."""
    for _ in range(3):
        current = set(await participant_ids(session, cid))
        new = [u for u in wanted if u not in current]
        if len(current) + len(new) > MAX_PARTICIPANTS:
            raise field_error("body.user_ids", f"A conversation has at most {MAX_PARTICIPANTS} participants.")
        now = datetime.now(UTC)
        # Core's executemany, as conversations.create does: no ORM object per row.
        rows = [
            {"conversation_id": cid, "user_id": u, "role": "member", "last_read_seq": 0, "joined_at": now}
            for u in new
        ]
        try:
            if rows:
                await session.execute(insert(Participant), rows)
            await session.commit()
            return new
        except IntegrityError:
            # A concurrent request added some of them first; adding is idempotent: look again.
            await session.rollback()
    raise ServiceUnavailable("The participants kept changing; try again.", retry_after=1)


async def remove(
    sessions: Sessions, redis: Redis, publisher: Publisher, me: uuid.UUID, cid: uuid.UUID, target: uuid.UUID
) -> None:
    """`me` leaves (target is me) or, as the owner, removes `target`; an owner who leaves hands
    the group to the longest-standing member."""
    async with sessions() as session:
        # Removals from one conversation take its row lock and run one at a time, each seeing
        # the last one's result: two removals of the same participant would otherwise both
        # delete the row (and announce it), and the owner and the heir leaving together would
        # leave the group without an owner.
        conversation = await conversation_of(session, cid, me, lock=True)
        require_group(conversation, "path.user_id", "Participants of a direct conversation are fixed.")
        # Read again under the lock: the caller may have left, or become the owner, meanwhile.
        mine = await session.get(Participant, (cid, me), populate_existing=True)
        if mine is None:
            raise NotFound("No such conversation.")
        if target != me and mine.role != "owner":
            raise Forbidden("Only the owner can remove other participants.")
        member = await session.get(Participant, (cid, target), populate_existing=True)
        if member is None:
            raise NotFound("No such participant.")
        recipients = await participant_ids(session, cid)
        await session.delete(member)
        if member.role == "owner":
            await _hand_over(session, cid, target)
        await session.commit()
    await announce(redis, publisher, cid, recipients, removed=[target])


async def _hand_over(session: AsyncSession, cid: uuid.UUID, leaving: uuid.UUID) -> None:
    """The group keeps an owner: the longest-standing remaining member inherits it."""
    heir = await session.scalar(
        select(Participant)
        .where(Participant.conversation_id == cid, Participant.user_id != leaving)
        .order_by(Participant.joined_at, Participant.user_id)
        .limit(1)
    )
    if heir is not None:
        heir.role = "owner"
