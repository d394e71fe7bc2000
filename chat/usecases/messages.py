"""Messages: accept a send (check and claim its uploads, seed what Redis lacks, queue it), queue
an edit or a delete, read a conversation's history (or one thread of it), read one message.

Writes are queued: a worker stores them and publishes their events. A send reads Postgres only
when it must (a reply, uploads, or Redis missing the members or the seq counter), so sends keep
working while Postgres is down (the queue absorbs the outage).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import limits
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from chat.domain import attachments, blocks, membership, reading
from chat.domain.sequence import Sequencer, persisted_max_seq
from chat.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unprocessable,
    field_error,
)
from chat.infra import metrics, tracing
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.jobqueue.accept import (
    Blocked,
    Enqueuer,
    NeedsSeed,
    NotMember,
    RateLimited,
    ReplicaUnconfirmed,
    Send,
)
from chat.jobqueue.jobs import (
    DELETE_MESSAGE,
    EDIT_MESSAGE,
    DeleteMessage,
    EditMessage,
    PersistMessage,
    change_job_id,
    persist_job_id,
)
from chat.models import Conversation, Message, Participant, Upload
from chat.schemas import MessageOut
from chat.usecases.conversations import require_participant

# After Redis lost its data, the newest claims of a conversation that come back from Postgres.
RESTORED_CLAIMS = 1000
# Message ids for client_id sends are derived, so a repeat maps to the same id on any replica.
CLIENT_ID_NAMESPACE = uuid.UUID("6f1c1d52-8d0e-4c1e-9a55-2f9b1f4b7e10")


@dataclass(frozen=True, slots=True)
class Queued:
    """A write the queue accepted: the message it is about, and the job that carries it out."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    job_id: str


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def message_id_for(me: uuid.UUID | None, cid: uuid.UUID, client_id: str | None) -> uuid.UUID:
    """A client_id send's id is derived from (sender, conversation, client_id), a system message's
    from ("system", conversation, client_id), so a repeat maps to the same id on any replica."""
    if not client_id:
        return uuid.uuid4()
    return uuid.uuid5(CLIENT_ID_NAMESPACE, f"{me or 'system'}:{cid}:{client_id}")


@dataclass(frozen=True, slots=True)
class Sending:
    """Accepts sends into conversations: the collaborators and limits every send shares."""

    sessions: Sessions
    # The same pool without transactions, for single-statement reads on hot paths.
    reader: AsyncEngine
    redis: Redis
    queue: Enqueuer
    sequencer: Sequencer
    storage: Storage
    send_limit: limits.RateLimitItem | None
    claim_seconds: int
    unsent_upload_seconds: int

    async def accept(
        self,
        me: uuid.UUID | None,
        cid: uuid.UUID,
        body: str,
        client_id: str | None = None,
        reply_to: uuid.UUID | None = None,
        uploads: Sequence[uuid.UUID] = (),
    ) -> Queued:
        """Give `me`'s message to `cid` its seq and queue it; a repeated client_id gets the first
        send's id and seq (409 if the body or the uploads differ).

        `me` None is a system message (the app's backend posts it through the server API): no
        sender, so no membership check and no per-user send limit; it is a plain text message.
        """
        if me is None and (reply_to is not None or uploads):
            raise field_error("body", "A system message has neither a reply_to nor attachments.")
        if len(set(uploads)) != len(uploads):
            raise field_error("body.attachments", "Each upload can be attached once.")
        if reply_to is not None and me is not None:
            await self._check_parent(cid, me, reply_to)
        message_id = message_id_for(me, cid, client_id)
        # Sends without uploads touch neither Postgres nor the store here. Nor does a repeat of a
        # client_id whose message is stored: its uploads are that message's (or, deleted, gone),
        # and accepting it answers the first send's seq, or 409 if it differs.
        claimed: list[uuid.UUID] = []
        if me is not None and uploads and not (client_id and await self._stored(message_id)):
            claimed = await self._claim(cid, me, uploads, message_id)
        try:
            return await self._queue(cid, me, body, client_id, reply_to, uploads, message_id)
        except BaseException:
            if claimed:
                async with self.sessions() as session:
                    await attachments.release(session, claimed, message_id)
                    await session.commit()
            raise

    async def _queue(
        self,
        cid: uuid.UUID,
        me: uuid.UUID | None,
        body: str,
        client_id: str | None,
        reply_to: uuid.UUID | None,
        uploads: Sequence[uuid.UUID],
        message_id: uuid.UUID,
    ) -> Queued:
        # A repeated client_id must repeat the uploads too, or it is a different message (409).
        files = "\0" + ",".join(str(i) for i in uploads) if uploads else ""
        body_digest = digest(body + files)
        job = PersistMessage(
            message_id=message_id,
            conversation_id=cid,
            sender_id=me,
            seq=0,
            body=body,
            client_id=client_id,
            created_at=datetime.now(UTC),
            client_digest=body_digest if client_id else None,
            reply_to=reply_to,
            attachments=tuple(uploads),
            kind="user" if me is not None else "system",
        )
        job_id = persist_job_id(message_id, self.queue.tag_of(cid))
        # One Redis round trip decides everything: membership, a repeated client_id, the send
        # rate, the seq, the enqueue. Postgres is read only to seed what Redis lacks.
        claims = client_id is not None
        send = Send(job, job_id, body_digest, self.claim_seconds, self.send_limit, claims=claims)
        for _ in range(3):
            try:
                with tracing.span("enqueue", producer=True):  # the job carries this span (codec)
                    result = await self.queue.accept_message(send)
            except ReplicaUnconfirmed:
                # Enqueued, but the promise ACCEPT_DURABILITY=replica makes cannot be given: a
                # retry with the same client_id gets this message, not a second one.
                raise ServiceUnavailable(
                    "The message queue has no replica confirming writes; try again.", retry_after=1
                ) from None
            if not isinstance(result, NeedsSeed):
                break
            await self._seed(result, cid)
        else:
            raise ServiceUnavailable("The conversation's membership kept changing; try again.", retry_after=1)
        if isinstance(result, NotMember):
            raise NotFound("No such conversation.")
        if isinstance(result, Blocked):
            raise Forbidden(blocks.BLOCKED)
        if isinstance(result, RateLimited):
            raise TooManyRequests(
                "Too many messages; slow down.", retry_after=math.ceil(result.retry_after_ms / 1000)
            )
        if result.conflict:
            raise Conflict("This client_id was already used for a different message body.")
        if result.fresh:
            metrics.MESSAGES_ACCEPTED.inc()
        return Queued(message_id, cid, result.seq, job_id)

    async def _claim(
        self, cid: uuid.UUID, me: uuid.UUID, ids: Sequence[uuid.UUID], message_id: uuid.UUID
    ) -> list[uuid.UUID]:
        """Check a send's uploads and claim them for the message; the ids this send claimed (not
        those a repeat of the same send had claimed before), to release if it goes no further.

        A non-participant learns nothing (404) before their uploads are looked at. The objects
        are checked with the store (HEAD) before the claim, outside any transaction.
        """
        unsent_before = datetime.now(UTC) - timedelta(seconds=self.unsent_upload_seconds)
        async with self.sessions() as session:
            await require_participant(session, cid, me)
            found = await _owned(session, ids, me, message_id, unsent_before)
        problem = await attachments.objects_problem(self.storage, found)
        if problem is not None:
            raise field_error("body.attachments", problem)
        async with self.sessions() as session:
            taken = await attachments.claim(session, ids, me, message_id)
            await session.commit()
        mine = [u.id for u in found if u.message_id is None]
        if len(taken) != len(ids):
            # Another send claimed one between the check and the claim (it keeps it), or the sweep
            # discarded it: this send gives back what it took, and says which.
            lost = [i for i in ids if i not in taken]
            async with self.sessions() as session:
                await attachments.release(session, [i for i in mine if i in taken], message_id)
                await session.commit()
                await _owned(session, lost, me, message_id, unsent_before)
            raise field_error("body.attachments", f"Upload {lost[0]} is attached to another message already.")
        return mine

    async def _stored(self, message_id: uuid.UUID) -> bool:
        async with self.sessions() as session:
            return await attachments.is_stored(session, message_id)

    async def _check_parent(self, cid: uuid.UUID, me: uuid.UUID, parent: uuid.UUID) -> None:
        """A reply's parent must be a stored message of this conversation (422); only a participant
        learns that (404 otherwise). Sends without `reply_to` never read Postgres here."""
        async with self.sessions() as session:
            await require_participant(session, cid, me)
            stored = await _stored_in(session, parent, cid)
        if not stored:
            raise field_error(
                "body.reply_to", "Must be the id of a message of this conversation (one already stored)."
            )

    async def _seed(self, missing: NeedsSeed, cid: uuid.UUID) -> None:
        """Fill in what Redis lost or never had from Postgres: the members, or the seq counter.

        A missing counter means a new conversation, or a Redis that lost its data: then the
        conversation's recent client_id claims come back too, so that repeats of sends made
        before the loss still get their first id and seq.
        """
        async with self.reader.connect() as conn:
            if missing is NeedsSeed.MEMBERS:
                read_at = await membership.generation(self.redis, cid)
                query = select(Participant.user_id).where(Participant.conversation_id == cid)
                members = list(await conn.scalars(query))
                if not members:
                    raise NotFound("No such conversation.")
                blocked = await conn.scalars(blocks.refused_senders(cid))
                await membership.seed(self.redis, cid, read_at, members, blocked)
                return
            await self.sequencer.raise_to(cid, await persisted_max_seq(conn, cid))
            life = self.claim_seconds
            recent = await conn.execute(
                select(Message.id, Message.seq, Message.client_digest, Message.body, Message.edited_at)
                .where(
                    Message.conversation_id == cid,
                    Message.client_id.is_not(None),
                    Message.created_at > datetime.now(UTC) - timedelta(seconds=life),
                )
                .order_by(Message.seq.desc())
                .limit(RESTORED_CLAIMS)
            )
        claims = []
        for row in recent:
            # Messages stored before digests were kept: the body is the digest's source, unless edited.
            original = row.client_digest or (digest(row.body) if row.edited_at is None and row.body else None)
            if original is not None:
                claims.append((row.id, row.seq, original))
        await self.queue.restore_claims(cid, claims, life)


async def _owned(
    session: AsyncSession,
    ids: Sequence[uuid.UUID],
    me: uuid.UUID,
    message_id: uuid.UUID,
    unsent_before: datetime,
) -> list[Upload]:
    try:
        return await attachments.owned(session, ids, me, message_id, unsent_before=unsent_before)
    except attachments.AttachmentRefused as exc:
        raise field_error("body.attachments", str(exc)) from None


async def _stored_in(session: AsyncSession, message_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
    """Whether the message is stored, in that conversation."""
    found = await session.scalar(select(Message.conversation_id).where(Message.id == message_id))
    return found == conversation_id


async def history(
    sessions: Sessions,
    storage: Storage,
    me: uuid.UUID,
    cid: uuid.UUID,
    *,
    limit: int,
    before: int | None = None,
    after: int | None = None,
    thread: uuid.UUID | None = None,
) -> tuple[list[MessageOut], bool]:
    """A page of `cid`'s messages as `me` reads them, oldest first, and whether there are more
    (the newest page, the page before seq `before`, or the page after seq `after`); `thread`
    keeps one message's replies."""
    if before is not None and after is not None:
        raise Unprocessable(
            "Use either before or after, not both.",
            [{"field": "query.before", "message": "Cannot be combined with after."}],
        )
    query = select(Message).where(Message.conversation_id == cid)
    if thread is not None:
        query = query.where(Message.reply_to == thread)
    if after is not None:
        query = query.where(Message.seq > after).order_by(Message.seq.asc())
    else:
        if before is not None:
            query = query.where(Message.seq < before)
        query = query.order_by(Message.seq.desc())
    async with sessions() as session:
        await require_participant(session, cid, me)
        if thread is not None and not await _stored_in(session, thread, cid):
            raise NotFound("No such message in this conversation.")
        rows = list(await session.scalars(query.limit(limit + 1)))
        has_more = len(rows) > limit
        rows = rows[:limit]
        if after is None:
            rows.reverse()
        shown = [MessageOut.model_validate(m) for m in rows]
        return await reading.as_read(session, shown, me, storage), has_more


async def visible(session: AsyncSession, me: uuid.UUID, mid: uuid.UUID) -> tuple[Message, str]:
    """The message and `me`'s role in its conversation; 404 unless `me` is in it."""
    found = (
        await session.execute(
            select(Message, Participant.role)
            .join(
                Participant,
                (Participant.conversation_id == Message.conversation_id) & (Participant.user_id == me),
            )
            .where(Message.id == mid)
        )
    ).first()
    if found is None:
        # The same answer whether the message does not exist or is not the caller's to see.
        raise NotFound("No such message (or it is still queued).")
    return found[0], found[1]


async def get(sessions: Sessions, storage: Storage, me: uuid.UUID, mid: uuid.UUID) -> MessageOut:
    """One message as `me` reads it."""
    async with sessions() as session:
        message, _ = await visible(session, me, mid)
        [out] = await reading.as_read(session, [MessageOut.model_validate(message)], me, storage)
    return out


async def find(sessions: Sessions, me: uuid.UUID, mid: uuid.UUID) -> tuple[Message, str]:
    """The message and `me`'s role in its conversation, as `visible` (404 unless `me` is in it)."""
    async with sessions() as session:
        return await visible(session, me, mid)


async def edit(queue: Enqueuer, me: uuid.UUID, message: Message, body: str) -> Queued:
    """Queue the sender's new body for their message (one `find` gave `me`)."""
    if message.sender_id != me:
        # A system message has no sender: no user can edit it.
        raise Forbidden("Only the sender can edit a message.")
    if message.deleted:
        raise Conflict("The message was deleted.")
    job_id = change_job_id("edit", message.id, queue.tag_of(message.conversation_id))
    payload = EditMessage(message_id=message.id, actor_id=me, body=body, edited_at=datetime.now(UTC))
    await queue.enqueue(EDIT_MESSAGE, payload, job_id)
    return Queued(message.id, message.conversation_id, message.seq, job_id)


async def delete(sessions: Sessions, queue: Enqueuer, me: uuid.UUID, mid: uuid.UUID) -> Queued:
    """Queue the deletion of a message, by its sender or the owner of its group."""
    async with sessions() as session:
        message, role = await visible(session, me, mid)
        if message.kind == "system":
            raise Forbidden("A system message is the app's: only its backend could change it.")
        if message.sender_id != me:
            kind = await session.scalar(
                select(Conversation.kind).where(Conversation.id == message.conversation_id)
            )
            if not (kind == "group" and role == "owner"):
                raise Forbidden("Only the sender or the group's owner can delete a message.")
    job_id = change_job_id("delete", message.id, queue.tag_of(message.conversation_id))
    payload = DeleteMessage(message_id=message.id, actor_id=me, deleted_at=datetime.now(UTC))
    await queue.enqueue(DELETE_MESSAGE, payload, job_id)
    return Queued(message.id, message.conversation_id, message.seq, job_id)
