"""Control frames and close codes the push process itself sends, and the event-id arithmetic of the seam."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import orjson

PONG = '{"type":"pong"}'
RESYNC_REQUIRED = '{"type":"resync_required"}'

_EVENT_PREFIX = '{"event_id":"'
_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

# RFC 6455: a close frame's payload is at most 125 bytes, and the code takes two of them.
MAX_CLOSE_REASON_BYTES = 123


@dataclass(frozen=True, slots=True)
class Close:
    """A close code of the contract, with a reason that tells the client what to do next."""

    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        if len(self.reason.encode()) > MAX_CLOSE_REASON_BYTES:
            raise ValueError(f"a close reason is at most {MAX_CLOSE_REASON_BYTES} bytes: {self.reason!r}")


# The client went away; nothing is sent.
GONE = Close(1001)
# A server-side failure (Redis down or hung, a bug): come back, but back off so an outage is not
# answered by every client reconnecting at once.
SERVER_ERROR = Close(1011, "server error; reconnect with back-off")
# Shutdown, or this process lost its subscription: the stream still holds every event, so the
# client resumes with its last_event_id, here or on another push process.
RESTARTING = Close(1012, "server restarting; reconnect")
TOKEN_INVALID = Close(4401, "token missing, invalid or expired")
TOO_SLOW = Close(4408, "too far behind; reconnect with last_event_id")
RATE_LIMITED = 4429


def rate_limited(what: str, retry_after: float) -> Close:
    """4429 with the retry hint an HTTP client would get in Retry-After, in whole seconds."""
    return Close(RATE_LIMITED, f"too many {what}; retry after {max(1, math.ceil(retry_after))} s")


def ready(user_id: str, connection_id: str, replayed: int, last_event_id: str | None) -> str:
    return orjson.dumps(
        {
            "type": "ready",
            "user_id": user_id,
            "connection_id": connection_id,
            "replayed": replayed,
            "last_event_id": last_event_id,
        }
    ).decode()


def error(detail: str) -> str:
    return orjson.dumps({"type": "error", "detail": detail}).decode()


def event_id_of(frame: str) -> str | None:
    """The event_id of a stored event's frame (workers splice it in first), None for typing."""
    if not frame.startswith(_EVENT_PREFIX):
        return None
    end = frame.find('"', len(_EVENT_PREFIX))
    return frame[len(_EVENT_PREFIX) : end] if end > 0 else None


def parse_id(value: str | bytes | None) -> tuple[int, int] | None:
    """A Redis stream id as a comparable pair, or None when it is not one."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    match = _STREAM_ID.match(value)
    return (int(match[1]), int(match[2])) if match else None
