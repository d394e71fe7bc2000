"""Attachments: uploads a message names. The rules the api and the worker share.

The api checks a send's uploads (the sender's own, attached nowhere else, their bytes in the
store with the size and type announced) and claims them for the message id it assigns, so that
of two sends naming one upload exactly one gets it. The worker checks the stored objects again
before it stores the message (a missing one is retried, then dead-lettered) and links them in the
transaction that records the message's mentions: the same statement as the claim, so a retried
job finds them linked to its own message and goes on.

Bytes do not outlive their use. Deleting a message discards its uploads (in the delete's
transaction); an upload no send named within UPLOAD_UNSENT_TTL_SECONDS is discarded by the sweep,
and no send may claim a discarded upload. The sweep, which one worker runs every
UPLOAD_SWEEP_SECONDS, deletes each discarded upload's object and then its row: a store that is
away leaves the rows for the next sweep, so no object is ever left without a row that names it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.infra.storage import Storage, StorageUnavailable, StoredObject
from chat.models import Message, Upload
from chat.schemas import AttachmentOut

log = logging.getLogger("chat.domain.attachments")

MAX_ATTACHMENTS = 10
MAX_FILENAME = 255
# RFC 6838's type/subtype names, without parameters: what S3 stores and later serves back.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")


def filename_problem(name: str) -> str | None:
    if not 1 <= len(name) <= MAX_FILENAME:
        return f"A filename is 1 to {MAX_FILENAME} characters."
    if "/" in name or "\\" in name or name in (".", ".."):
        return "A filename has no path: no / or \\, and is not . or .."
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "A filename has no control characters."
    return None


def content_type_problem(content_type: str) -> str | None:
    if CONTENT_TYPE.fullmatch(content_type) is None:
        return "A content type is type/subtype, such as image/png, without parameters."
    return None


class AttachmentRefused(Exception):
    """The upload can never be attached to this message: someone else's, attached elsewhere, or
    unknown. The api answers 422; the worker fails the job for good."""


class NotUploaded(Exception):
    """The store does not hold the bytes the upload announced (yet). The api answers 422; the
    worker retries with back-off, as for an outage, then dead-letters the job."""


def object_problem(upload: Upload, found: StoredObject | None) -> str | None:
    """What is wrong with the stored object of an upload, or None when it is as announced."""
    if found is None:
        return f"Upload {upload.id} is not uploaded yet: PUT its bytes to its upload_url first."
    if found.size != upload.size:
        return f"Upload {upload.id} holds {found.size} bytes, not the {upload.size} announced."
    if found.content_type.lower() != upload.content_type.lower():
        return f"Upload {upload.id} was stored as {found.content_type!r}, not {upload.content_type!r}."
    return None


async def objects_problem(storage: Storage, uploads: Sequence[Upload]) -> str | None:
    found = await asyncio.gather(*(storage.head(u.id) for u in uploads))
    problems = [object_problem(u, f) for u, f in zip(uploads, found, strict=True)]
    return next((p for p in problems if p is not None), None)


async def owned(
    db: AsyncSession,
    ids: Sequence[uuid.UUID],
    owner: uuid.UUID,
    message_id: uuid.UUID,
    *,
    unsent_before: datetime | None = None,
) -> list[Upload]:
    """The uploads, in the order given, if each is the owner's and free or this message's already,
    and not discarded (nor, free ones, announced before `unsent_before`: about to be)."""
    rows = {u.id: u for u in await db.scalars(select(Upload).where(Upload.id.in_(ids)))}
    for upload_id in ids:
        upload = rows.get(upload_id)
        # Someone else's upload reads exactly like one that does not exist.
        if upload is None or upload.owner_id != owner:
            raise AttachmentRefused(f"No upload {upload_id} of yours.")
        if upload.message_id not in (None, message_id):
            raise AttachmentRefused(f"Upload {upload_id} is attached to another message already.")
        unsent_too_long = (
            upload.message_id is None and unsent_before is not None and upload.created_at < unsent_before
        )
        if upload.discarded_at is not None or unsent_too_long:
            raise AttachmentRefused(f"Upload {upload_id} has expired unsent; upload the file again.")
    return [rows[i] for i in ids]


async def claim(
    db: AsyncSession,
    ids: Sequence[uuid.UUID],
    owner: uuid.UUID,
    message_id: uuid.UUID,
    *,
    linked_at: datetime | None = None,
) -> set[uuid.UUID]:
    """Attach the owner's uploads that are free (or this message's already) to the message, in the
    order given; the ids now attached to it. Idempotent: the api's claim, and with `linked_at` the
    worker's link in the transaction that stores the message."""
    if not ids:
        return set()
    values: dict[str, Any] = {
        "message_id": message_id,
        "position": case({i: n for n, i in enumerate(ids)}, value=Upload.id),
    }
    if linked_at is not None:
        values["linked_at"] = func.coalesce(Upload.linked_at, linked_at)
    statement = (
        update(Upload)
        .where(
            Upload.id.in_(ids),
            Upload.owner_id == owner,
            or_(Upload.message_id.is_(None), Upload.message_id == message_id),
            Upload.discarded_at.is_(None),
        )
        .values(values)
        .returning(Upload.id)
        .execution_options(synchronize_session=False)
    )
    return set((await db.execute(statement)).scalars())


async def release(db: AsyncSession, ids: Sequence[uuid.UUID], message_id: uuid.UUID) -> None:
    """Free uploads a send claimed and then did not queue (refused, rate limited, a conflict), but
    not those the worker has linked to a stored message: a repeat of a client_id shares the id of
    the send it repeats, and must not take that message's files away. (Accepted and not stored
    yet, the worker claims them again when it stores the message.) One statement, whose test is
    on the row itself: a link committing meanwhile is waited for and then seen."""
    if ids:
        await db.execute(
            update(Upload)
            .where(Upload.id.in_(ids), Upload.message_id == message_id, Upload.linked_at.is_(None))
            .values(message_id=None, position=None)
            .execution_options(synchronize_session=False)
        )


async def is_stored(db: AsyncSession, message_id: uuid.UUID) -> bool:
    """Whether the message is stored: then its uploads are as its worker linked them, and neither a
    repeat of its send nor its job running again checks them anew."""
    return await db.scalar(select(Message.id).where(Message.id == message_id)) is not None


async def ready(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    ids: Sequence[uuid.UUID],
    owner: uuid.UUID,
    message_id: uuid.UUID,
) -> list[Upload]:
    """The worker's check before storing a message: its uploads are still the sender's and free
    or its own, and the store holds each as announced (NotUploaded otherwise: try again later).
    A message stored already (its job runs again) has the uploads it was stored with, or, deleted
    since, none: nothing is checked again."""
    async with sessions() as session:
        if await is_stored(session, message_id):
            return (await of(session, [message_id])).get(message_id, [])
        uploads = await owned(session, ids, owner, message_id)
    problem = await objects_problem(storage, uploads)
    if problem is not None:
        raise NotUploaded(problem)
    return uploads


async def link(
    session: AsyncSession, messages: Sequence[tuple[uuid.UUID, uuid.UUID, Sequence[uuid.UUID]]]
) -> None:
    """Link each stored message (id, sender, upload ids) to its uploads, in the caller's transaction."""
    now = datetime.now(UTC)
    for message_id, sender, ids in messages:
        linked = await claim(session, ids, sender, message_id, linked_at=now)
        if len(linked) != len(ids):
            # Only a claim released under a queued send gets here; the message keeps the rest.
            log.warning("message %s: uploads %s were no longer free", message_id, set(ids) - linked)


async def of(db: AsyncSession, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Upload]]:
    """Each message's uploads, in the order its sender listed them."""
    if not message_ids:
        return {}
    found: dict[uuid.UUID, list[Upload]] = defaultdict(list)
    query = (
        select(Upload)
        .where(Upload.message_id.in_(set(message_ids)), Upload.linked_at.is_not(None))
        .order_by(Upload.message_id, Upload.position, Upload.created_at)
    )
    for upload in await db.scalars(query):
        assert upload.message_id is not None  # noqa: S101 - the query selects on it
        found[upload.message_id].append(upload)
    return found


def shown(uploads: Sequence[Upload], storage: Storage) -> list[AttachmentOut]:
    """Attachments as readers get them: each with a fresh presigned download URL."""
    return [
        AttachmentOut(
            id=u.id,
            filename=u.filename,
            content_type=u.content_type,
            size=u.size,
            url=storage.presign_get(u.id, u.filename),
        )
        for u in uploads
    ]


async def discard_of_message(session: AsyncSession, message_id: uuid.UUID, now: datetime) -> None:
    """A deleted message's uploads go to the sweep, in the caller's (the delete's) transaction."""
    await session.execute(
        update(Upload)
        .where(Upload.message_id == message_id, Upload.discarded_at.is_(None))
        .values(discarded_at=now)
        .execution_options(synchronize_session=False)
    )


async def sweep(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    *,
    now: datetime,
    unsent_before: datetime,
    urls_expired_before: datetime,
    limit: int = 200,
) -> int:
    """Discard the uploads never sent since `unsent_before`, then delete the objects and rows of
    up to `limit` discarded ones announced before `urls_expired_before`; how many went.
    Objects the store does not delete keep their rows for a later sweep, at the back of the line
    (StorageUnavailable is raised once the rest are done).

    An object goes only once its upload URL has expired: the store refuses a second PUT only
    while it holds the bytes, so deleting them earlier would let the URL write them back."""
    async with sessions() as session:
        # Not stored with a message in time: never sent, or claimed by a send whose message was
        # never stored (refused, or its job failed for good). Marked in one statement that tests
        # the row as a link does, so of the worker linking an upload and the sweep discarding it,
        # exactly one wins.
        await session.execute(
            update(Upload)
            .where(
                Upload.linked_at.is_(None),
                Upload.discarded_at.is_(None),
                Upload.created_at < unsent_before,
            )
            .values(discarded_at=now)
            .execution_options(synchronize_session=False)
        )
        ids = list(
            await session.scalars(
                select(Upload.id)
                .where(Upload.discarded_at.is_not(None), Upload.created_at < urls_expired_before)
                .order_by(Upload.discarded_at)
                .limit(limit)
            )
        )
        await session.commit()
    if not ids:
        return 0
    results = await asyncio.gather(*(storage.delete(upload_id) for upload_id in ids), return_exceptions=True)
    gone = [upload_id for upload_id, r in zip(ids, results, strict=True) if not isinstance(r, BaseException)]
    failed = [upload_id for upload_id, r in zip(ids, results, strict=True) if isinstance(r, BaseException)]
    async with sessions() as session:
        if gone:
            await session.execute(delete(Upload).where(Upload.id.in_(gone)))
        if failed:
            # To the back of the line: an object the store keeps refusing holds up no other.
            await session.execute(
                update(Upload)
                .where(Upload.id.in_(failed))
                .values(discarded_at=now)
                .execution_options(synchronize_session=False)
            )
        await session.commit()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        unavailable = next((e for e in errors if isinstance(e, StorageUnavailable)), None)
        if unavailable is not None:
            raise unavailable
        log.error(
            "the store refused to delete %d objects (they are tried again later): %r", len(errors), errors[0]
        )
    return len(gone)
