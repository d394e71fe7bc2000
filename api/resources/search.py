"""`GET /search/messages?q=&limit&cursor`: the caller's messages matching `q`, best first."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.http import limit_param, query_uuid, send
from api.views import require_participant
from chat import reading, search
from chat.errors import field_error
from chat.schemas import MessageOut
from chat.storage import Storage


@dataclass(frozen=True, slots=True)
class MessageSearch:
    """`{items: [message], next_cursor}`, ranked, only from conversations the caller is in (or
    the one `conversation_id` names: 404 unless the caller is in it), never a message of someone
    the caller blocked."""

    sessions: async_sessionmaker[AsyncSession]
    storage: Storage

    async def on_get(self, req: Request, resp: Response) -> None:
        me = current_user(req)
        text = _query_text(req)
        limit = limit_param(req)
        after = _position(req.get_param("cursor"))
        within = query_uuid(req, "conversation_id", "a conversation id")
        async with self.sessions() as session:
            if within is not None:
                await require_participant(session, within, me)
            dialect = session.get_bind().dialect.name
            if not search.has_terms(dialect, text):
                send(resp, {"items": [], "next_cursor": None})
                return
            rows = (await session.execute(search.query(dialect, me, text, limit + 1, after, within))).all()
            page = rows[:limit]
            items = await reading.as_read(
                session, [MessageOut.model_validate(m) for m, _ in page], me, self.storage
            )
        cursor = None
        if len(rows) > limit:
            last, rank = page[-1]
            cursor = search.Position(rank, last.created_at, last.id).cursor()
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
