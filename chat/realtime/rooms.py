"""Rooms: conversations of `LARGE_ROOM_MEMBERS` or more, whose events are stored once and published
once to every push process instead of once per member (docs/design/fanout.md).

A room's event is one `XADD` to the room's own stream and one publish on one of `FEEDS` feed
channels, which every push process subscribes to at start; each fans a room frame out to its local
sockets of the room's members. The stream key carries its feed's hash tag, so on a Redis Cluster
the script's stream and its (sharded) channel share one slot.

Event ids stay `<ms>-<counter>`, unique and increasing per user. A room entry `ms-s` is shown to
clients as `ms-(ROOM_COUNTER_BASE + FEEDS * n + feed)`, where n counts the feed's room events (one
`INCR` beside the stream, in its slot): two rooms' entries can share a Redis id (each stream has
its own), never a shown one, and within a room the shown ids increase as the entries do. A user's
own stream never reaches ROOM_COUNTER_BASE within a millisecond, so the two kinds of id never meet,
and every counter stays below 2^53 (a JavaScript number compares them exactly).
"""

from __future__ import annotations

import uuid
import zlib

from chat.realtime.events import LUA_FRAME

FEEDS = 16
ROOM_COUNTER_BASE = 1 << 40
ROOM_STREAM_PREFIX = "room-events:"
FEED_PREFIX = "room-feed:"
# The events that go to every member of a conversation alike. conversation.created stays in the
# users' own streams, and so does a participant.* event for the user it names (published to them
# apart, chat.usecases.participants.announce): both change which rooms the user resumes from, so
# they must be in that user's own order.
ROOM_EVENTS = frozenset(
    {
        "participant.added",
        "participant.removed",
        "message.created",
        "message.updated",
        "message.deleted",
        "reaction.added",
        "reaction.removed",
        "conversation.read",
    }
)
CID_LENGTH = 36  # a feed message is "<conversation id> <frame>"


def feed_of(conversation_id: uuid.UUID | str) -> int:
    return zlib.crc32(str(conversation_id).encode()) % FEEDS


def stream_key(conversation_id: uuid.UUID | str) -> str:
    return f"{ROOM_STREAM_PREFIX}{{r{feed_of(conversation_id)}}}:{conversation_id}"


def feed(index: int) -> str:
    return f"{FEED_PREFIX}{{r{index}}}"


def feed_of_conversation(conversation_id: uuid.UUID | str) -> str:
    return feed(feed_of(conversation_id))


def feeds() -> list[str]:
    return [feed(k) for k in range(FEEDS)]


def is_feed(channel_name: str) -> bool:
    return channel_name.startswith(FEED_PREFIX)


COUNTER_FIELD = b"c"


def counter_key(conversation_id: uuid.UUID | str) -> str:
    return f"room-ids:{{r{feed_of(conversation_id)}}}"


def shown(entry_id: bytes | str, counter: bytes | str) -> str:
    """A room stream's entry as clients see its id: the entry's milliseconds, its stored counter."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return f"{text.partition('-')[0]}-{counter.decode() if isinstance(counter, bytes) else counter}"


def is_room_id(position: tuple[int, int]) -> bool:
    return position[1] >= ROOM_COUNTER_BASE


# KEYS[1] the room's stream, KEYS[2] its feed's counter. ARGV: maxlen, the encoded event, the oldest
# id to keep (ms), the feed channel, the conversation id, the feed's index. Returns the event id as
# clients see it.
_ROOM_BODY = """
local n = redis.call('INCR', KEYS[2])
local counter = string.format('%%.0f', {base} + {feeds} * n + tonumber(ARGV[6]))
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2], 'c', counter)
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3])
local shown = string.sub(id, 1, string.find(id, '-', 1, true)) .. counter
redis.call('%s', ARGV[4], ARGV[5] .. ' ' .. frame(shown, ARGV[2]))
return shown
""".replace("{base}", str(ROOM_COUNTER_BASE)).replace("{feeds}", str(FEEDS))

ROOM_SCRIPT = LUA_FRAME + _ROOM_BODY % "PUBLISH"
CLUSTER_ROOM_SCRIPT = LUA_FRAME + _ROOM_BODY % "SPUBLISH"


def split(message: str) -> tuple[str, str]:
    """A feed message's conversation id and frame."""
    return message[:CID_LENGTH], message[CID_LENGTH + 1 :]
