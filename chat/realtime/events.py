"""The closed set of events that workers and the api publish and the push process relays.

Each event is told apart by its `type`; `event_id` is not part of the model because it is
assigned per recipient by Redis when the event is appended to that recipient's stream.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from chat.infra import tracing
from chat.schemas import ConversationOut, MessageOut


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    conversation_id: uuid.UUID


class UserRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: uuid.UUID


class ReadMarker(UserRef):
    seq: int


class ReactionRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    message_id: uuid.UUID
    emoji: str
    user_id: uuid.UUID


class MessageCreated(_Event):
    type: Literal["message.created"] = "message.created"
    data: MessageOut


class MessageUpdated(_Event):
    type: Literal["message.updated"] = "message.updated"
    data: MessageOut


class MessageDeleted(_Event):
    type: Literal["message.deleted"] = "message.deleted"
    data: MessageOut


class ReactionAdded(_Event):
    type: Literal["reaction.added"] = "reaction.added"
    data: ReactionRef


class ReactionRemoved(_Event):
    type: Literal["reaction.removed"] = "reaction.removed"
    data: ReactionRef


class ConversationCreated(_Event):
    type: Literal["conversation.created"] = "conversation.created"
    data: ConversationOut


class ParticipantAdded(_Event):
    type: Literal["participant.added"] = "participant.added"
    data: UserRef


class ParticipantRemoved(_Event):
    type: Literal["participant.removed"] = "participant.removed"
    data: UserRef


class ConversationRead(_Event):
    type: Literal["conversation.read"] = "conversation.read"
    data: ReadMarker


class Typing(_Event):
    """Ephemeral: published live only, never stored in a stream, so it carries no event_id."""

    type: Literal["typing"] = "typing"
    data: UserRef


StoredEvent = (
    MessageCreated
    | MessageUpdated
    | MessageDeleted
    | ReactionAdded
    | ReactionRemoved
    | ConversationCreated
    | ParticipantAdded
    | ParticipantRemoved
    | ConversationRead
)
Event = Annotated[StoredEvent | Typing, Field(discriminator="type")]

_event_adapter: TypeAdapter[StoredEvent | Typing] = TypeAdapter(Event)


# With tracing on, an event carries the span that published it to the push process, as its last
# field: a W3C traceparent, 55 characters (chat.infra.tracing). Push strips it (`untraced`) before a
# client sees the frame. Only a key can put these bytes there: a quote inside a string is escaped.
TRACE_FIELD = "_traceparent"
_TRACE_MARK = f',"{TRACE_FIELD}":"'
_PARENT = len("00-") + 32 + len("-") + 16 + len("-") + 2  # version, trace id, span id, flags
_TRACE_TAIL = len(_TRACE_MARK) + _PARENT + len('"}')


def encode(event: StoredEvent | Typing) -> bytes:
    """Serialise once; the same bytes go to every recipient's stream and channel."""
    data = orjson.dumps(event.model_dump(mode="json"))
    parent = tracing.traceparent()
    if parent is None or len(parent) != _PARENT:
        return data
    return data[:-1] + _TRACE_MARK.encode() + parent.encode() + b'"}'


def untraced(frame: str) -> tuple[str, str | None]:
    """A frame as the client gets it, and the traceparent it carried (None when it had none)."""
    if frame[-_TRACE_TAIL : -_PARENT - 2] != _TRACE_MARK:  # one short comparison for every frame
        return frame, None
    return frame[:-_TRACE_TAIL] + "}", frame[-_PARENT - 2 : -2]


# A stored event reaches a client as its encoded JSON with the recipient's event_id spliced in
# first. Built here and, identically, inside Redis by the publisher's Lua (LUA_FRAME); parsed by
# event_id_of. tests/test_frames.py holds the Lua-built bytes equal to frame()'s.
FRAME_PREFIX = '{"event_id":"'
LUA_FRAME = """
local function frame(event_id, encoded)
  return '{"event_id":"' .. event_id .. '",' .. string.sub(encoded, 2)
end
"""


def frame(event_id: bytes | str, encoded: bytes) -> bytes:
    """The WebSocket frame for one recipient: the encoded event with its `event_id` spliced in."""
    if isinstance(event_id, str):
        event_id = event_id.encode()
    return FRAME_PREFIX.encode() + event_id + b'",' + encoded[1:]


def event_id_of(text: str) -> str | None:
    """The event_id of a stored event's frame, None for a frame without one (typing)."""
    if not text.startswith(FRAME_PREFIX):
        return None
    end = text.find('"', len(FRAME_PREFIX))
    return text[len(FRAME_PREFIX) : end] if end > 0 else None


def decode(data: bytes | str) -> StoredEvent | Typing:
    """Parse an event (a frame's extra `event_id` is dropped); for consumers and tests."""
    raw = orjson.loads(data)
    raw.pop("event_id", None)
    raw.pop(TRACE_FIELD, None)
    return _event_adapter.validate_python(raw)
