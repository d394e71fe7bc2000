"""Control frames and close codes the push process itself sends, and the event-id arithmetic of the seam."""

from __future__ import annotations

import re

import orjson

# The frame format and the close codes are part of the contract, owned in chat/.
from chat.realtime.events import event_id_of
from chat.realtime.wsprotocol import (
    DEACTIVATED,
    GONE,
    RATE_LIMITED,
    RESTARTING,
    SERVER_ERROR,
    TOKEN_INVALID,
    TOO_SLOW,
    Close,
    rate_limited,
)

PONG = '{"type":"pong"}'
RESYNC_REQUIRED = '{"type":"resync_required"}'

# ASCII digits only (\d also matches other scripts' digits), and \Z: $ would take a trailing newline.
_STREAM_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})\Z")
_MAX_PART = 2**64 - 1  # what Redis accepts in a stream id

__all__ = [
    "DEACTIVATED",
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


def parse_id(value: str | bytes | None) -> tuple[int, int] | None:
    """A Redis stream id as a comparable pair, or None when it is not one."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    match = _STREAM_ID.match(value)
    if match is None:
        return None
    parsed = int(match[1]), int(match[2])
    return parsed if max(parsed) <= _MAX_PART else None
