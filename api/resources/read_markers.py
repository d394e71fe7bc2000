"""A participant's own state in a conversation: the read marker (how far they have read, announced
to the others) and their settings (muted)."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, StrictBool
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.fields import Seq
from api.http import parse, path_uuid, send
from api.views import conversation_of, participant_ids
from chat.eventbus import Publisher
from chat.events import ConversationRead
from chat.events import ReadMarker as ReadMarkerData
from chat.models import Participant
from chat.sequence import Sequencer


class ReadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    seq: Seq


@dataclass(frozen=True, slots=True)
class ReadMarker:
    sessions: async_sessionmaker[AsyncSession]
    sequencer: Sequencer
    publisher: Publisher
    max_body: int

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, ReadBody, self.max_body)
        async with self.sessions() as session:
            conversation = await conversation_of(session, cid, me)
            # Never past the newest message accepted: a marker beyond it would hide future messages.
            newest = max(conversation.last_seq, await self.sequencer.current(cid) or 0)
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
            await self.publisher.publish(
                ConversationRead(conversation_id=cid, data=ReadMarkerData(user_id=me, seq=seq)), recipients
            )
        resp.status = 204


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    muted: StrictBool  # true or false: "yes" or 1 would be a guess


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    """`PATCH /conversations/{id}/settings` `{muted}`: the caller's own setting, `200 {muted}`."""

    sessions: async_sessionmaker[AsyncSession]
    max_body: int

    async def on_patch(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, SettingsBody, self.max_body)
        async with self.sessions() as session:
            await conversation_of(session, cid, me)
            await session.execute(
                update(Participant)
                .where(Participant.conversation_id == cid, Participant.user_id == me)
                .values(muted=body.muted)
            )
            await session.commit()
        send(resp, {"muted": body.muted})
