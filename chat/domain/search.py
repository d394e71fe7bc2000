"""Message search over the conversations a user is in.

Postgres: full-text search over `messages.search_vector`, a column Postgres computes from the body
(migration 0008) with a GIN index, ranked by `ts_rank`. The column is not in `chat.models`: SQLite
(dev mode) cannot have it, so it exists only in Postgres and the schema comparison skips it
(`in_schema_comparison`, alembic's `include_object`). SQLite matches every word of the query as
a case-insensitive substring, newest first.

Pages follow (rank, created_at, id) downwards, so a cursor stays right while messages arrive.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Float, Select, and_, cast, exists, func, literal, literal_column, select, tuple_
from sqlalchemy.dialects.postgresql import REGCONFIG, TSVECTOR
from sqlalchemy.sql.elements import ColumnElement

from chat.domain import cursors
from chat.models import Block, Message, Participant

VECTOR_COLUMN = "search_vector"
VECTOR_INDEX = "ix_messages_search"
TS_CONFIG = "simple"  # as the generated column was built (migration 0008)
MAX_QUERY_CHARS = 256
MAX_TERMS = 16  # SQLite: one LIKE per word; a query of hundreds of words is not a search


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last item's rank, time and id."""

    rank: float
    created_at: datetime
    id: uuid.UUID

    def cursor(self) -> str:
        return cursors.encode(repr(self.rank), self.created_at.isoformat(), str(self.id))

    @classmethod
    def from_cursor(cls, raw: str) -> Position:
        """ValueError for anything this module did not write."""
        rank, at, mid = cursors.decode(raw, 3)
        return cls(cursors.parse_rank(rank), cursors.parse_time(at), cursors.parse_uuid(mid))


def in_schema_comparison(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's `include_object`: the search column and index live in Postgres only, on purpose."""
    return not (type_ == "column" and name == VECTOR_COLUMN) and not (
        type_ == "index" and name == VECTOR_INDEX
    )


def query(
    dialect: str,
    reader: uuid.UUID,
    text: str,
    limit: int,
    after: Position | None,
    conversation: uuid.UUID | None = None,
) -> Select[Message, float]:
    """Up to `limit` (message, rank) rows matching `text`, best first, from the reader's
    conversations (or the one given), never sent by someone the reader blocked, never deleted."""
    if dialect == "postgresql":
        tsquery = func.websearch_to_tsquery(literal(TS_CONFIG, REGCONFIG), text)
        vector = literal_column(f"messages.{VECTOR_COLUMN}", TSVECTOR)
        # float8 on both sides of the cursor comparison: ts_rank's real, widened exactly.
        rank: ColumnElement[float] = cast(func.ts_rank(vector, tsquery), Float(precision=53))
        match: ColumnElement[bool] = vector.bool_op("@@")(tsquery)
    else:
        rank = literal(0.0, Float)
        match = and_(*(Message.body.ilike(f"%{_escaped(word)}%", escape="\\") for word in _words(text)))
    blocked = exists().where(Block.blocker_id == reader, Block.blocked_id == Message.sender_id)
    found = (
        select(Message, rank.label("rank"))
        .join(
            Participant,
            (Participant.conversation_id == Message.conversation_id) & (Participant.user_id == reader),
        )
        .where(match, Message.deleted.is_(False), ~blocked)
    )
    if conversation is not None:
        found = found.where(Message.conversation_id == conversation)
    if after is not None:
        found = found.where(
            tuple_(rank, Message.created_at, Message.id) < tuple_(after.rank, after.created_at, after.id)
        )
    return found.order_by(rank.desc(), Message.created_at.desc(), Message.id.desc()).limit(limit)


def has_terms(dialect: str, text: str) -> bool:
    """Whether the query names anything to look for (Postgres decides for itself: a query of only
    punctuation simply matches nothing there)."""
    return dialect == "postgresql" or bool(_words(text))


def _words(text: str) -> list[str]:
    return [w.strip('"') for w in text.split() if w.strip('"')][:MAX_TERMS]


def _escaped(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
