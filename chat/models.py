"""Database tables. Alembic migrations under `alembic/` must match these exactly (a test checks)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite hands back naive datetimes)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(32))
    # Uniqueness is case-insensitive; a lower-cased copy keeps that portable across backends.
    username_key: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    # None for the users an app's backend vouches for: they never log in with a password here.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The app's own id for this user (an app token's `sub`); None for built-in accounts.
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    # What the app's backend keeps with the user (PUT /server/users); "metadata" is taken on the class.
    app_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    # A deactivated user's tokens are refused and their sockets closed; reactivation undoes it.
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Erased: the row keeps its id (other users' history still names a sender) and nothing else.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # One login = one family; rotation keeps the family, re-use of a rotated token revokes it.
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_activity", "last_activity_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # "<smaller user id>:<larger user id>" for direct conversations: one per pair, enforced by the DB.
    direct_key: Mapped[str | None] = mapped_column(String(80), unique=True, nullable=True)
    # None when the app's backend made it (PUT /server/conversations/{external_id}): no user did.
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The app's own id for a conversation its backend manages (PUT /server/conversations/{id}).
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    app_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)


class Participant(Base):
    __tablename__ = "participants"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    last_read_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Muted: events still arrive, but the conversation counts nothing unread for this participant.
    muted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


Index("ix_participants_user_id", Participant.user_id)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        Index("ix_messages_thread", "reply_to", "seq"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    # None for a system message, which the app's backend sends as no user.
    sender_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The first body's digest: a client_id repeated with another body is a conflict even after an
    # edit changed the stored body.
    client_digest: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # The message this one replies to, in the same conversation; the parent counts its replies.
    reply_to: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("messages.id"), nullable=True)
    reply_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_reply_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Reaction(Base):
    """One user's emoji on one message. A removal keeps the row (present false) with its time, so
    an add and a remove that reach the workers out of order end as the later one says."""

    __tablename__ = "reactions"

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    emoji: Mapped[str] = mapped_column(String(32), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Mention(Base):
    """A participant a message names with @username, resolved when the message is stored."""

    __tablename__ = "mentions"
    __table_args__ = (Index("ix_mentions_unread", "user_id", "conversation_id", "seq"),)

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    seq: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)  # where in the body it first appears, for order


class Block(Base):
    """`blocker` blocked `blocked`: who may no longer open a direct conversation with the blocker or
    send into theirs."""

    __tablename__ = "blocks"

    blocker_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Webhook(Base):
    """An admin's subscription: events of these types are POSTed, signed with `secret`, to `url`."""

    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    url: Mapped[str] = mapped_column(String(2048))
    # A list of event types; JSON rather than a Postgres array so that the dev mode's SQLite holds it.
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """A file a user announced with POST /uploads. Its bytes go straight to the store (keyed by
    the id); `message_id` is set when a send names it, before the message is stored (the api
    claims it so that two sends cannot both take it), which is why it is no foreign key."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    # Where in the message's list the sender put it: attachments are shown in that order.
    position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Set by the worker that stores the message, in its transaction: only then is the upload the
    # message's for good (reads show it; a refused repeat of the send cannot give it back).
    linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set when its bytes are to go: its message was deleted, or it was not stored with a message in
    # time. No send may claim it from then on; the worker's sweep deletes the object, then the row.
    discarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


class ServerKey(Base):
    """A key an app's backend calls /server/* with. Only its SHA-256 is kept: the key itself is
    printed once, when made, and cannot be read back."""

    __tablename__ = "server_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
