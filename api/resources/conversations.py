"""Conversations: create, list, read, membership, read markers and typing."""

from __future__ import annotations

import base64
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import current_user
from api.deps import Deps
from api.fields import NoNul, Seq
from api.http import limit_param, parse, path_uuid, send
from api.views import conversation_view, conversation_views, participant_ids, require_participant
from chat import membership, presence
from chat.errors import (
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    field_error,
)
from chat.events import (
    ConversationCreated,
    ConversationRead,
    ParticipantAdded,
    ParticipantRemoved,
    Typing,
    UserRef,
)
from chat.events import ReadMarker as ReadMarkerData
from chat.models import Conversation, Participant, User
from chat.sequence import Sequencer

MAX_PARTICIPANTS = 1000


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["direct", "group"]
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul] | None
    ) = None
    participant_ids: Annotated[list[uuid.UUID], Field(max_length=MAX_PARTICIPANTS)]

    @model_validator(mode="after")
    def _shape(self) -> CreateBody:
        if self.kind == "direct" and len(set(self.participant_ids)) != 1:
            raise ValueError("a direct conversation takes exactly one other participant")
        if self.kind == "group" and self.title is None:
            raise ValueError("a group conversation needs a title")
        return self


class AddBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=MAX_PARTICIPANTS)]


class ReadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    seq: Seq


async def _require_users(session: AsyncSession, user_ids: list[uuid.UUID], field: str) -> None:
    # On the caller's session: a handler holds one pooled connection at a time, never two.
    found = set(await session.scalars(select(User.id).where(User.id.in_(user_ids))))
    missing = [str(u) for u in user_ids if u not in found]
    if missing:
        raise field_error(field, f"No such user: {', '.join(missing)}.")


class Conversations:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._sequencer = Sequencer(deps.redis)

    async def on_post(self, req: Request, resp: Response) -> None:
        body = await parse(req, CreateBody, self._deps.settings.max_body_bytes)
        me = current_user(req)
        others = [u for u in dict.fromkeys(body.participant_ids) if u != me]
        if body.kind == "direct" and not others:
            raise field_error("body.participant_ids", "A direct conversation is with someone else.")
        if len(others) + 1 > MAX_PARTICIPANTS:
            raise field_error("body.participant_ids", f"At most {MAX_PARTICIPANTS} participants.")
        now = datetime.now(UTC)
        direct_key = ":".join(sorted(str(u) for u in (me, *others))) if body.kind == "direct" else None
        conversation = Conversation(
            id=uuid.uuid4(),
            kind=body.kind,
            title=body.title if body.kind == "group" else None,
            direct_key=direct_key,
            created_by=me,
            created_at=now,
            last_seq=0,
            last_activity_at=now,
        )
        members = [
            Participant(
                conversation_id=conversation.id,
                user_id=me,
                role="owner" if body.kind == "group" else "member",
                last_read_seq=0,
                joined_at=now,
            )
        ]
        members += [
            Participant(
                conversation_id=conversation.id, user_id=u, role="member", last_read_seq=0, joined_at=now
            )
            for u in others
        ]
        async with self._deps.sessions() as session:
            if await session.get(User, me) is None:
                raise Unauthorized("The user of this token no longer exists.", invalid_token=True)
            await _require_users(session, others, "body.participant_ids")
            if direct_key is not None:
                existing = await session.scalar(
                    select(Conversation.id).where(Conversation.direct_key == direct_key)
                )
                if existing is not None:
                    send(resp, await conversation_view(session, existing, me), 200)
                    return
            try:
                session.add(conversation)
                await session.flush()
                session.add_all(members)
                await session.commit()
            except IntegrityError:
                # Both users opened the direct conversation at once; the other request won.
                await session.rollback()
                existing = await session.scalar(
                    select(Conversation.id).where(Conversation.direct_key == direct_key)
                )
                if direct_key is None or existing is None:
                    raise
                send(resp, await conversation_view(session, existing, me), 200)
                return
            view = await conversation_view(session, conversation.id, me)
        # New: no generation yet, so the seed always lands; with the counter there too (no message
        # yet, so 0), the first send needs no Postgres (it would otherwise seed the counter from it).
        await membership.seed(self._deps.redis, conversation.id, b"0", [me, *others])
        await self._sequencer.raise_to(conversation.id, 0)
        await self._deps.publisher.publish(
            ConversationCreated(conversation_id=conversation.id, data=view), [me, *others]
        )
        resp.set_header("Location", f"/api/v1/conversations/{conversation.id}")
        send(resp, view, 201)

    async def on_get(self, req: Request, resp: Response) -> None:
        me = current_user(req)
        limit = limit_param(req)
        after = _decode_cursor(req.get_param("cursor"))
        query = (
            select(Conversation)
            .join(
                Participant, and_(Participant.conversation_id == Conversation.id, Participant.user_id == me)
            )
            .order_by(Conversation.last_activity_at.desc(), Conversation.id.desc())
            .limit(limit + 1)
        )
        if after is not None:
            at, cid = after
            query = query.where(
                or_(
                    Conversation.last_activity_at < at,
                    and_(Conversation.last_activity_at == at, Conversation.id < cid),
                )
            )
        async with self._deps.sessions() as session:
            page = list(await session.scalars(query))
            more = len(page) > limit
            page = page[:limit]
            items = await conversation_views(session, page, me)
        cursor = _encode_cursor(page[-1].last_activity_at, page[-1].id) if more else None
        send(resp, {"items": items, "next_cursor": cursor})


class ConversationById:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def on_get(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        async with self._deps.sessions() as session:
            await require_participant(session, cid, me)
            send(resp, await conversation_view(session, cid, me))


class Participants:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, AddBody, self._deps.settings.max_body_bytes)
        async with self._deps.sessions() as session:
            await require_participant(session, cid, me)
            conversation = await session.get(Conversation, cid)
            if conversation is None:
                raise NotFound("No such conversation.")
            if conversation.kind != "group":
                raise Unprocessable(
                    "Participants can only be added to group conversations.",
                    [{"field": "body.user_ids", "message": "This is a direct conversation."}],
                )
            wanted = list(dict.fromkeys(body.user_ids))
            await _require_users(session, wanted, "body.user_ids")
            new: list[uuid.UUID] = []
            for _ in range(3):
                current = set(await participant_ids(session, cid))
                new = [u for u in wanted if u not in current]
                if len(current) + len(new) > MAX_PARTICIPANTS:
                    raise field_error(
                        "body.user_ids", f"A conversation has at most {MAX_PARTICIPANTS} participants."
                    )
                now = datetime.now(UTC)
                session.add_all(
                    Participant(conversation_id=cid, user_id=u, role="member", last_read_seq=0, joined_at=now)
                    for u in new
                )
                try:
                    await session.commit()
                    break
                except IntegrityError:
                    # A concurrent request added some of them first; adding is idempotent: look again.
                    await session.rollback()
            else:
                raise ServiceUnavailable("The participants kept changing; try again.", retry_after=1)
            view = await conversation_view(session, cid, me)
            recipients = await participant_ids(session, cid)
        if new:
            await membership.changed(self._deps.redis, cid)
        for user in new:
            await self._deps.publisher.publish(
                ParticipantAdded(conversation_id=cid, data=UserRef(user_id=user)), recipients
            )
        send(resp, view)


class ParticipantById:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def on_delete(self, req: Request, resp: Response, conversation_id: str, user_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        target = path_uuid(user_id, "participant")
        me = current_user(req)
        async with self._deps.sessions() as session:
            await require_participant(session, cid, me)
            # Removals from one conversation take its row lock and run one at a time, each seeing
            # the last one's result: two removals of the same participant would otherwise both
            # delete the row (and announce it), and the owner and the heir leaving together would
            # leave the group without an owner.
            conversation = await session.get(Conversation, cid, with_for_update=True)
            if conversation is None:
                raise NotFound("No such conversation.")
            if conversation.kind != "group":
                raise Unprocessable(
                    "Participants of a direct conversation are fixed.",
                    [{"field": "path.user_id", "message": "This is a direct conversation."}],
                )
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
                # The group keeps an owner: the longest-standing remaining member inherits it.
                heir = await session.scalar(
                    select(Participant)
                    .where(Participant.conversation_id == cid, Participant.user_id != target)
                    .order_by(Participant.joined_at, Participant.user_id)
                    .limit(1)
                )
                if heir is not None:
                    heir.role = "owner"
            await session.commit()
        await membership.changed(self._deps.redis, cid)
        await self._deps.publisher.publish(
            ParticipantRemoved(conversation_id=cid, data=UserRef(user_id=target)), recipients
        )
        resp.status = 204


class ReadMarker:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._sequencer = Sequencer(deps.redis)

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, ReadBody, self._deps.settings.max_body_bytes)
        async with self._deps.sessions() as session:
            await require_participant(session, cid, me)
            conversation = await session.get(Conversation, cid)
            if conversation is None:
                raise NotFound("No such conversation.")
            # Never past the newest message accepted: a marker beyond it would hide future messages.
            newest = max(conversation.last_seq, await self._sequencer.current(cid) or 0)
            seq = min(body.seq, newest)
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
            await self._deps.publisher.publish(
                ConversationRead(conversation_id=cid, data=ReadMarkerData(user_id=me, seq=seq)), recipients
            )
        resp.status = 204


class TypingIndicator:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        async with self._deps.sessions() as session:
            await require_participant(session, cid, me)
            recipients = [u for u in await participant_ids(session, cid) if u != me]
        wait_ms = await presence.typing_slot(
            self._deps.redis, cid, me, self._deps.settings.typing_interval_seconds
        )
        if wait_ms is not None:
            raise TooManyRequests(
                "Typing notifications are limited to one per interval per conversation.",
                retry_after=math.ceil(max(wait_ms, 1) / 1000),
            )
        await self._deps.publisher.publish_ephemeral(
            Typing(conversation_id=cid, data=UserRef(user_id=me)), recipients
        )
        resp.status = 204


def _encode_cursor(at: datetime, cid: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{cid}".encode()).decode().rstrip("=")


def _decode_cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not raw:
        return None
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode()
        at, _, cid = text.partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(cid)
    except ValueError:
        raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None
