"""A participant's read marker: how far they have read, announced to the others."""

from __future__ import annotations

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.fields import Seq
from api.http import parse, path_uuid
from api.views import participant_ids, require_participant
from chat.errors import NotFound
from chat.eventbus import Publisher
from chat.events import ConversationRead
from chat.events import ReadMarker as ReadMarkerData
from chat.models import Conversation, Participant
from chat.sequence import Sequencer


class ReadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    seq: Seq


class ReadMarker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        sequencer: Sequencer,
        publisher: Publisher,
        max_body: int,
    ) -> None:
        self._sessions = sessions
        self._sequencer = sequencer
        self._publisher = publisher
        self._max_body = max_body

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, ReadBody, self._max_body)
        async with self._sessions() as session:
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
            await self._publisher.publish(
                ConversationRead(conversation_id=cid, data=ReadMarkerData(user_id=me, seq=seq)), recipients
            )
        resp.status = 204
