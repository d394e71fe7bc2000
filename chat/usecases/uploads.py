"""Uploads: announce a file (its row, and where to PUT its bytes); a send then names it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol

from chat.domain.quota import ByteQuota
from chat.errors import TooManyRequests, field_error
from chat.infra.db import Sessions
from chat.infra.storage import Presigned, Storage
from chat.models import Upload


class UserCounter(Protocol):
    """A per-user rate limit: counts one for the user, or refuses (429) over the limit."""

    async def count(self, user_id: uuid.UUID) -> None: ...


def _mebibytes(size: int) -> str:
    return f"{size / 1024 / 1024:g} MiB"


async def announce(
    sessions: Sessions,
    storage: Storage,
    limit: UserCounter,
    quota: ByteQuota,
    max_upload: int,
    me: uuid.UUID,
    filename: str,
    content_type: str,
    size: int,
) -> tuple[uuid.UUID, Presigned]:
    """Record `me`'s upload of a file of `size` bytes (within `max_upload`, the rate limit and the
    day's byte quota); its id, and the presigned PUT that sends its bytes to the store."""
    if not 1 <= size <= max_upload:
        raise field_error(
            "body.size",
            f"A file is 1 to {max_upload} bytes ({_mebibytes(max_upload)}); this one says {size}.",
        )
    # Counted once the request is valid: each one is a row and a signed URL.
    await limit.count(me)
    # By the size it declares: the store takes no more than that for it (a PUT of more is 413).
    taken = await quota.take(me, size)
    if not taken.allowed:
        raise TooManyRequests(
            f"This file would take you past your upload quota of {quota.limit} bytes a day "
            f"({taken.used} used); try again after the day's window ends.",
            taken.retry_after,
        )
    upload = Upload(
        id=uuid.uuid4(),
        owner_id=me,
        filename=filename,
        content_type=content_type,
        size=size,
        created_at=datetime.now(UTC),
    )
    async with sessions() as session:
        session.add(upload)
        await session.commit()
    return upload.id, storage.presign_put(upload.id, content_type, size)
