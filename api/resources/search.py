"""`GET /search/messages?q=&limit&cursor`: the caller's messages matching `q`, best first."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response

from api.auth import current_user
from api.http import limit_param, query_uuid, send
from chat.domain import search
from chat.errors import field_error
from chat.infra.db import Sessions
from chat.infra.storage import Storage
from chat.usecases import search as searching


@dataclass(frozen=True, slots=True)
class MessageSearch:
    """`{items: [message], next_cursor}`, ranked, only from conversations the caller is in (or
    the one `conversation_id` names: 404 unless the caller is in it), never a message of someone
    the caller blocked."""

    sessions: Sessions
    storage: Storage

    async def on_get(self, req: Request, resp: Response) -> None:
        me = current_user(req)
        text = _query_text(req)
        limit = limit_param(req)
        after = _position(req.get_param("cursor"))
        within = query_uuid(req, "conversation_id", "a conversation id")
        items, cursor = await searching.messages(self.sessions, self.storage, me, text, limit, after, within)
        send(resp, {"items": items, "next_cursor": cursor})


def _query_text(req: Request) -> str:
    text = (req.get_param("q") or "").strip()
    if not text:
        raise field_error("query.q", "Required: the words to look for.")
    if len(text) > search.MAX_QUERY_CHARS or "\x00" in text:
        raise field_error("query.q", f"At most {search.MAX_QUERY_CHARS} characters, and no NUL.")
    return text


def _position(raw: str | None) -> search.Position | None:
    if raw is None:
        return None
    try:
        return search.Position.from_cursor(raw)
    except ValueError:
        raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None
