"""A participant's own state in a conversation: the read marker (how far they have read, announced
to the others) and their settings (muted)."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from pydantic import BaseModel, ConfigDict, StrictBool

from api.auth import current_user
from api.fields import Seq
from api.http import parse, path_uuid, send
from chat.domain.sequence import Sequencer
from chat.infra.db import Sessions
from chat.realtime.eventbus import Publisher
from chat.usecases import reading


class ReadBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    seq: Seq


@dataclass(frozen=True, slots=True)
class ReadMarker:
    sessions: Sessions
    sequencer: Sequencer
    publisher: Publisher
    max_body: int

    async def on_post(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, ReadBody, self.max_body)
        await reading.mark_read(self.sessions, self.sequencer, self.publisher, me, cid, body.seq)
        resp.status = 204


class SettingsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    muted: StrictBool  # true or false: "yes" or 1 would be a guess


@dataclass(frozen=True, slots=True)
class ConversationSettings:
    """`PATCH /conversations/{id}/settings` `{muted}`: the caller's own setting, `200 {muted}`."""

    sessions: Sessions
    max_body: int

    async def on_patch(self, req: Request, resp: Response, conversation_id: str) -> None:
        cid = path_uuid(conversation_id, "conversation")
        me = current_user(req)
        body = await parse(req, SettingsBody, self.max_body)
        await reading.set_muted(self.sessions, me, cid, body.muted)
        send(resp, {"muted": body.muted})
