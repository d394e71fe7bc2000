"""Opaque list cursors: a few text fields, base64url-encoded, read back only by whoever wrote them."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

_SEPARATOR = "|"


def encode(*fields: str) -> str:
    return base64.urlsafe_b64encode(_SEPARATOR.join(fields).encode()).decode().rstrip("=")


def decode(raw: str, count: int) -> list[str]:
    """The `count` fields of a cursor; ValueError for anything that is not one."""
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor") from exc
    fields = text.split(_SEPARATOR, count - 1)
    if len(fields) != count or not all(fields):
        raise ValueError("not a cursor")
    return fields


def encode_at(at: datetime, key: uuid.UUID) -> str:
    """A position in a list ordered by time, ties broken by id."""
    return encode(at.isoformat(), str(key))


def decode_at(raw: str) -> tuple[datetime, uuid.UUID]:
    """What `encode_at` wrote; ValueError for anything else."""
    at, key = decode(raw, 2)
    when = datetime.fromisoformat(at)
    if when.tzinfo is None:
        raise ValueError("not a cursor")
    return when, uuid.UUID(key)
