"""Control frames and close codes the push process itself sends, and the event-id arithmetic of the seam."""

from __future__ import annotations

import re

import orjson

PONG = '{"type":"pong"}'
RESYNC_REQUIRED = '{"type":"resync_required"}'

_EVENT_PREFIX = '{"event_id":"'
_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")

# The close codes are part of the contract, owned with the rest of the protocol in chat/.
from chat.wsprotocol import (  # noqa: E402
    GONE,
    RATE_LIMITED,
    RESTARTING,
    SERVER_ERROR,
    TOKEN_INVALID,
    TOO_SLOW,
    Close,
    rate_limited,
)

__all__ = [
    "GONE",
    "PONG",
    "RATE_LIMITED",
    "RESTARTING",
    "RESYNC_REQUIRED",
    "SERVER_ERROR",
    "TOKEN_INVALID",
    "TOO_SLOW",
    "Close",
    "error",
    "event_id_of",
    "parse_id",
    "rate_limited",
    "ready",
]


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
