"""What clients see of users, conversations and messages: REST responses and event payloads alike."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class Representation(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)


class UserOut(Representation):
    id: uuid.UUID
    username: str
    display_name: str
    created_at: datetime
    # The app's own id for the user (its tokens' `sub`); null for built-in accounts.
    external_id: str | None = None


class UserProfileOut(UserOut):
    online: bool
    last_seen_at: datetime | None


class ReactionOut(Representation):
    emoji: str
    count: int
    me: bool  # whether the reader reacted so; false in events, which go to everyone alike


class AttachmentOut(Representation):
    id: uuid.UUID
    filename: str
    content_type: str
    size: int
    url: str  # a presigned GET, valid for DOWNLOAD_URL_EXPIRE_SECONDS: read the message again for a fresh one


class MessageOut(Representation):
    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    # A system message (`kind` "system", posted by the app's backend through the server API) has no sender.
    kind: Literal["user", "system"] = "user"
    sender_id: uuid.UUID | None
    body: str | None
    client_id: str | None
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    reply_to: uuid.UUID | None = None
    reply_count: int = 0
    last_reply_at: datetime | None = None
    reactions: list[ReactionOut] = []
    mentions: list[uuid.UUID] = []
    attachments: list[AttachmentOut] = []


class ParticipantOut(Representation):
    user_id: uuid.UUID
    role: Literal["owner", "member"]
    last_read_seq: int


class ConversationOut(Representation):
    id: uuid.UUID
    kind: Literal["direct", "group"]
    title: str | None
    # The app's own id for a conversation its backend made (`PUT /server/conversations/{external_id}`).
    external_id: str | None = None
    created_at: datetime
    participants: list[ParticipantOut]
    last_seq: int
    last_message: MessageOut | None
    unread_count: int
    unread_mentions: int = 0
    muted: bool = False
