"""Opaque list cursors: a few text fields, base64url-encoded, read back only by whoever wrote them.

A cursor comes back from a client, so reading one is parsing untrusted input: every field is read
strictly (ASCII, the exact forms this module writes) and anything that would not survive the query
it feeds (a time that overflows on its way to UTC, a rank that is not a finite number) is a
ValueError here, which the api answers with a 422, rather than an error in the database driver.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import uuid
from datetime import UTC, datetime

_SEPARATOR = "|"
MAX_CHARS = 1024  # far above any cursor this api writes; a longer one is not read at all
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What repr() writes for a finite, non-negative float.
_RANK = re.compile(r"[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?")
RANK_MAX = 3.4028234663852886e38  # ts_rank is a PostgreSQL real: nothing above its largest value


def encode(*fields: str) -> str:
    return base64.urlsafe_b64encode(_SEPARATOR.join(fields).encode()).decode().rstrip("=")


def decode(raw: str, count: int) -> list[str]:
    """The `count` fields of a cursor; ValueError for anything that is not one."""
    if len(raw) > MAX_CHARS or not raw.isascii() or not _BASE64URL.fullmatch(raw):
        raise ValueError("not a cursor")
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor") from exc
    fields = text.split(_SEPARATOR, count - 1)
    if len(fields) != count or not all(fields) or "\x00" in text:
        raise ValueError("not a cursor")
    return fields


def encode_at(at: datetime, key: uuid.UUID) -> str:
    """A position in a list ordered by time, ties broken by id."""
    return encode(at.isoformat(), str(key))


def decode_at(raw: str) -> tuple[datetime, uuid.UUID]:
    """What `encode_at` wrote; ValueError for anything else."""
    at, key = decode(raw, 2)
    return parse_time(at), parse_uuid(key)


def parse_time(text: str) -> datetime:
    """A cursor's time field: an ISO 8601 time with an offset, returned in UTC (so an offset that
    pushes it outside what a datetime can hold fails here, not in the database driver)."""
    if not text.isascii():
        raise ValueError("not a cursor")
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("not a cursor")
    try:
        return when.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("not a cursor") from exc


def parse_uuid(text: str) -> uuid.UUID:
    """A cursor's id field, exactly as str(uuid) writes it."""
    if not _UUID.fullmatch(text):
        raise ValueError("not a cursor")
    return uuid.UUID(text)


def parse_rank(text: str) -> float:
    """A cursor's rank field: what repr() writes for a finite rank between 0 and a real's largest."""
    if not text.isascii() or not _RANK.fullmatch(text):
        raise ValueError("not a cursor")
    rank = float(text)
    if not math.isfinite(rank) or not 0 <= rank <= RANK_MAX:
        raise ValueError("not a cursor")
    return rank
