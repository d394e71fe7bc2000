"""Messages: sends, edits and deletes are validated here and queued; history is read from Postgres."""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import limits
from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.auth import current_user
from api.fields import PG_INT_MAX, NoNul, NotBlankNoNul
from api.http import limit_param, parse, path_uuid, query_int, query_uuid, send
from api.views import require_participant
from chat import attachments, blocks, membership, metrics, reactions, reading
from chat.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unprocessable,
    field_error,
)
from chat.jobs import (
    DELETE_MESSAGE,
    EDIT_MESSAGE,
    REACT,
    DeleteMessage,
    EditMessage,
    PersistMessage,
    React,
    change_job_id,
    persist_job_id,
)
from chat.models import Conversation, Message, Participant
from chat.queue import Blocked, Enqueuer, NeedsSeed, NotMember, RateLimited, Send
from chat.schemas import MessageOut
from chat.sequence import Sequencer, persisted_max_seq
from chat.storage import Storage

MAX_BODY_CHARS = 4000
# After Redis lost its data, the newest claims of a conversation that come back from Postgres.
RESTORED_CLAIMS = 1000
# Message ids for client_id sends are derived, so a repeat maps to the same id on any replica.
CLIENT_ID_NAMESPACE = uuid.UUID("6f1c1d52-8d0e-4c1e-9a55-2f9b1f4b7e10")


MessageText = Annotated[str, StringConstraints(max_length=MAX_BODY_CHARS), NotBlankNoNul]


class SendBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    body: MessageText
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul] | None = None
    reply_to: uuid.UUID | None = None
    attachments: list[uuid.UUID] = Field(default=[], max_length=attachments.MAX_ATTACHMENTS)

    @field_validator("attachments", mode="before")
    @classmethod
    def _none_is_none(cls, value: object) -> object:
        # `null` means none, as it does for reply_to and client_id.
        return [] if value is None else value


class EditBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    body: MessageText


async def _stored_in(session: AsyncSession, message_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
    """Whether the message is stored, in that conversation."""
    found = await session.scalar(select(Message.conversation_id).where(Message.id == message_id))
    return found == conversation_id


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def accepted(
    resp: Response, message_id: uuid.UUID, conversation_id: uuid.UUID, seq: int, job_id: str
) -> None:
    resp.set_header("Location", f"/api/v1/messages/{message_id}")
    send(
        resp,
        {
            "id": message_id,
            "conversation_id": conversation_id,
            "seq": seq,
            "status": "queued",
            "job_id": job_id,
        },
        202,
    )


@dataclass(frozen=True, slots=True)
class ConversationMessages:
    sessions: async_sessionmaker[AsyncSession]
    # The same pool without transactions, for single-statement reads on hot paths.
    reader: AsyncEngine
    redis: Redis
    queue: Enqueuer
    sequencer: Sequencer
    send_limit: limits.RateLimitItem | None
    claim_seconds: int
    max_body: int
    storage: Storage
    unsent_upload_seconds: int

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, SendBody, self.max_body)
        if len(set(body.attachments)) != len(body.attachments):
            raise field_error("body.attachments", "Each upload can be attached once.")
        if body.reply_to is not None:
            await self._check_parent(cid, me, body.reply_to)
        message_id = (
            uuid.uuid5(CLIENT_ID_NAMESPACE, f"{me}:{cid}:{body.client_id}")
            if body.client_id
            else uuid.uuid4()
        )
        # Sends without attachments touch neither Postgres nor the store here. Nor does a repeat
        # of a client_id whose message is stored: its uploads are that message's (or, deleted,
        # gone), and accepting it answers the first send's 202, or 409 if it differs.
        claimed: list[uuid.UUID] = []
        if body.attachments and not (body.client_id and await self._stored(message_id)):
            claimed = await self._claim(cid, me, body.attachments, message_id)
        try:
            await self._accept(req, resp, cid, me, body, message_id)
        except BaseException:
            if claimed:
                async with self.sessions() as session:
                    await attachments.release(session, claimed, message_id)
                    await session.commit()
            raise

    async def _accept(
        self,
        req: Request,
        resp: Response,
        cid: uuid.UUID,
        me: uuid.UUID,
        body: SendBody,
        message_id: uuid.UUID,
    ) -> None:
        # A repeated client_id must repeat the attachments too, or it is a different message (409).
        files = "\0" + ",".join(str(i) for i in body.attachments) if body.attachments else ""
        body_digest = digest(body.body + files)
        job = PersistMessage(
            message_id=message_id,
            conversation_id=cid,
            sender_id=me,
            seq=0,
            body=body.body,
            client_id=body.client_id,
            created_at=datetime.now(UTC),
            client_digest=body_digest if body.client_id else None,
            reply_to=body.reply_to,
            attachments=tuple(body.attachments),
        )
        job_id = persist_job_id(message_id)
        # One Redis round trip decides everything: membership, a repeated client_id, the send
        # rate, the seq, the enqueue. Postgres is read only to seed what Redis lacks, so sends
        # keep working while Postgres is down (the queue absorbs the outage).
        send = Send(
            job,
            job_id,
            body_digest,
            self.claim_seconds,
            self.send_limit,
            claims=body.client_id is not None,
        )
        for _ in range(3):
            result = await self.queue.accept_message(send)
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
        accepted(resp, message_id, cid, result.seq, job_id)

    async def _claim(
        self, cid: uuid.UUID, me: uuid.UUID, ids: list[uuid.UUID], message_id: uuid.UUID
    ) -> list[uuid.UUID]:
        """Check a send's uploads and claim them for the message; the ids this request claimed
        (not those a repeat of the same send had claimed before), to release if it goes no further.

        A non-participant learns nothing (404) before their uploads are looked at. The objects
        are checked with the store (HEAD) before the claim, outside any transaction.
        """
        unsent_before = datetime.now(UTC) - timedelta(seconds=self.unsent_upload_seconds)
        async with self.sessions() as session:
            await require_participant(session, cid, me)
            try:
                uploads = await attachments.owned(session, ids, me, message_id, unsent_before=unsent_before)
            except attachments.AttachmentRefused as exc:
                raise field_error("body.attachments", str(exc)) from None
        problem = await attachments.objects_problem(self.storage, uploads)
        if problem is not None:
            raise field_error("body.attachments", problem)
        async with self.sessions() as session:
            taken = await attachments.claim(session, ids, me, message_id)
            await session.commit()
        mine = [u.id for u in uploads if u.message_id is None]
        if len(taken) != len(ids):
            # Another send claimed one between the check and the claim (it keeps it), or the sweep
            # discarded it: this send gives back what it took, and says which.
            lost = [i for i in ids if i not in taken]
            async with self.sessions() as session:
                await attachments.release(session, [i for i in mine if i in taken], message_id)
                await session.commit()
                try:
                    await attachments.owned(session, lost, me, message_id, unsent_before=unsent_before)
                except attachments.AttachmentRefused as exc:
                    raise field_error("body.attachments", str(exc)) from None
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
        await self.queue.restore_claims(claims, life)

    async def on_get(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        if req.get_param("cursor") is not None:
            # Lists elsewhere page with cursors; history pages by seq. Silently ignoring it would
            # hand the client the newest page again, forever.
            raise field_error("query.cursor", "History pages by seq: use before=SEQ or after=SEQ.")
        parent = query_uuid(req, "thread", "a message id")
        before = query_int(req, "before", lo=0, hi=PG_INT_MAX)
        after = query_int(req, "after", lo=0, hi=PG_INT_MAX)
        limit = limit_param(req)
        if before is not None and after is not None:
            raise Unprocessable(
                "Use either before or after, not both.",
                [{"field": "query.before", "message": "Cannot be combined with after."}],
            )
        query = select(Message).where(Message.conversation_id == cid)
        if parent is not None:
            # One message's replies, paged by seq like the whole history.
            query = query.where(Message.reply_to == parent)
        if after is not None:
            query = query.where(Message.seq > after).order_by(Message.seq.asc())
        else:
            if before is not None:
                query = query.where(Message.seq < before)
            query = query.order_by(Message.seq.desc())
        async with self.sessions() as session:
            await require_participant(session, cid, me)
            if parent is not None and not await _stored_in(session, parent, cid):
                raise NotFound("No such message in this conversation.")
            rows = list(await session.scalars(query.limit(limit + 1)))
            has_more = len(rows) > limit
            rows = rows[:limit]
            if after is None:
                rows.reverse()
            shown = [MessageOut.model_validate(m) for m in rows]
            items = await reading.as_read(session, shown, me, self.storage)
        send(resp, {"items": items, "has_more": has_more})


async def visible(
    sessions: async_sessionmaker[AsyncSession], req: Request, message_id: str
) -> tuple[Message, str]:
    """The message and the caller's role in its conversation; 404 unless the caller is in it."""
    mid = path_uuid(message_id, "message")
    me = current_user(req)
    async with sessions() as session:
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


@dataclass(frozen=True, slots=True)
class MessageById:
    sessions: async_sessionmaker[AsyncSession]
    queue: Enqueuer
    max_body: int
    storage: Storage

    async def _visible(self, req: Request, message_id: str) -> tuple[Message, str]:
        return await visible(self.sessions, req, message_id)

    async def on_get(self, req: Request, resp: Response, message_id: str) -> None:
        message, _ = await self._visible(req, message_id)
        async with self.sessions() as session:
            [out] = await reading.as_read(
                session, [MessageOut.model_validate(message)], current_user(req), self.storage
            )
        send(resp, out)

    async def on_patch(self, req: Request, resp: Response, message_id: str) -> None:
        message, _ = await self._visible(req, message_id)
        body = await parse(req, EditBody, self.max_body)
        me = current_user(req)
        if message.sender_id != me:
            raise Forbidden("Only the sender can edit a message.")
        if message.deleted:
            raise Conflict("The message was deleted.")
        job_id = change_job_id("edit", message.id)
        payload = EditMessage(message_id=message.id, actor_id=me, body=body.body, edited_at=datetime.now(UTC))
        await self.queue.enqueue(EDIT_MESSAGE, payload, job_id)
        accepted(resp, message.id, message.conversation_id, message.seq, job_id)

    async def on_delete(self, req: Request, resp: Response, message_id: str) -> None:
        message, role = await self._visible(req, message_id)
        me = current_user(req)
        if message.sender_id != me:
            async with self.sessions() as session:
                kind = await session.scalar(
                    select(Conversation.kind).where(Conversation.id == message.conversation_id)
                )
            if not (kind == "group" and role == "owner"):
                raise Forbidden("Only the sender or the group's owner can delete a message.")
        job_id = change_job_id("delete", message.id)
        payload = DeleteMessage(message_id=message.id, actor_id=me, deleted_at=datetime.now(UTC))
        await self.queue.enqueue(DELETE_MESSAGE, payload, job_id)
        accepted(resp, message.id, message.conversation_id, message.seq, job_id)


@dataclass(frozen=True, slots=True)
class MessageReaction:
    """`PUT` and `DELETE /messages/{id}/reactions/{emoji}`: idempotent, `204`; a worker stores the
    change in the order the api accepted it and announces it with `reaction.added`/`.removed`."""

    sessions: async_sessionmaker[AsyncSession]
    queue: Enqueuer

    async def on_put(self, req: Request, resp: Response, message_id: str, emoji: str) -> None:
        await self._change(req, resp, message_id, emoji, present=True)

    async def on_delete(self, req: Request, resp: Response, message_id: str, emoji: str) -> None:
        await self._change(req, resp, message_id, emoji, present=False)

    async def _change(
        self, req: Request, resp: Response, message_id: str, emoji: str, *, present: bool
    ) -> None:
        message, _ = await visible(self.sessions, req, message_id)
        if not reactions.valid_emoji(emoji):
            raise field_error(
                "path.emoji",
                "An emoji is 1 to 32 visible characters in UTF-8, none of them whitespace "
                "(zero width joiners and tag characters of emoji sequences are fine), not only "
                "dots, and none of / \\ ? # %.",
            )
        if present and message.deleted:
            raise Conflict("The message was deleted.")
        me = current_user(req)
        if present:
            # Taking a reaction back stays possible; adding one is a message to the blocker.
            async with self.sessions() as session:
                if await session.scalar(blocks.refused(message.conversation_id, me)):
                    raise Forbidden(blocks.BLOCKED)
        payload = React(
            message_id=message.id,
            conversation_id=message.conversation_id,
            user_id=me,
            emoji=emoji,
            present=present,
            changed_at=datetime.now(UTC),
        )
        await self.queue.enqueue(REACT, payload, change_job_id("react", message.id))
        resp.status = 204
