"""The one place messages are written. Every write is idempotent, so a retried job stores nothing twice."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import Table, bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chat.domain import attachments
from chat.domain.sequence import Sequencer, persisted_max_seq
from chat.infra.db import upsert_insert as _insert
from chat.jobqueue.jobs import DeleteMessage, EditMessage, PersistMessage, React
from chat.models import Conversation, Message, Participant, Reaction, UTCDateTime
from chat.schemas import MessageOut

# How often a lost counter may hand out a taken number before the job gives up (and retries later).
MAX_RESEQUENCE = 5


def _row(job: PersistMessage, seq: int) -> dict[str, Any]:
    return {
        "id": job.message_id,
        "conversation_id": job.conversation_id,
        "seq": seq,
        "kind": job.kind,
        "sender_id": job.sender_id,
        "body": job.body,
        "client_id": job.client_id,
        "client_digest": job.client_digest,
        "created_at": job.created_at,
        "edited_at": None,
        "deleted": False,
        "reply_to": job.reply_to,
    }


def _out(job: PersistMessage, seq: int) -> MessageOut:
    row = _row(job, seq)
    del row["client_digest"]  # kept for idempotency checks, never shown
    return MessageOut.model_validate(row)


# Postgres only: the whole batch in one statement and one round trip, in its own transaction (run
# outside any the session began, it commits by itself). It inserts the messages, moves each
# conversation's last_seq and activity forward with the rows locked in id order (two workers'
# batches over the same conversations wait for each other instead of deadlocking), and reads who
# receives the events, all in one snapshot. Through SQLAlchemy the same work took five round trips
# and most of a worker's CPU per message (docs/benchmarks.md).
_PG_BATCH = """
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::uuid[], $5::text[], $6::varchar[],
                         $7::varchar[], $8::timestamptz[], $9::uuid[], $10::varchar[])
        AS b(id, conversation_id, seq, sender_id, body, client_id, client_digest, created_at, reply_to, kind)
), inserted AS (
    INSERT INTO messages (id, conversation_id, seq, sender_id, body, client_id, client_digest,
                          created_at, edited_at, deleted, reply_to, reply_count, kind)
    SELECT id, conversation_id, seq, sender_id, body, client_id, client_digest, created_at, NULL, false,
           reply_to, 0, kind
    FROM batch
    ON CONFLICT DO NOTHING
    RETURNING id, reply_to, created_at
), threads AS (
    -- Only replies stored now count: a retried job's reply was counted when it was stored.
    UPDATE messages p
    SET reply_count = p.reply_count + t.replies, last_reply_at = GREATEST(p.last_reply_at, t.latest)
    FROM (SELECT reply_to, count(*) AS replies, max(created_at) AS latest
          FROM inserted WHERE reply_to IS NOT NULL GROUP BY reply_to) t
    WHERE p.id = t.reply_to
), newest AS (
    SELECT conversation_id, max(seq) AS top, max(created_at) AS latest FROM batch GROUP BY conversation_id
), locked AS (
    SELECT id FROM conversations WHERE id IN (SELECT conversation_id FROM newest)
    ORDER BY id FOR NO KEY UPDATE
), advanced AS (
    UPDATE conversations c
    SET last_seq = GREATEST(c.last_seq, n.top), last_activity_at = GREATEST(c.last_activity_at, n.latest)
    FROM newest n
    WHERE c.id = n.conversation_id AND c.id IN (SELECT id FROM locked)
)
SELECT true AS inserted, id AS a, NULL::uuid AS b FROM inserted
UNION ALL
SELECT false, conversation_id, user_id FROM participants
WHERE conversation_id IN (SELECT conversation_id FROM newest)
"""

Members = dict[uuid.UUID, list[uuid.UUID]]


async def persist_batch(
    session: AsyncSession, jobs: Sequence[PersistMessage], sequencer: Sequencer
) -> tuple[list[tuple[MessageOut, bool]], Members]:
    """Store a batch of queued messages and read who receives their events: in job order, each
    stored row and whether it was stored before this batch; and each conversation's participants.

    On Postgres the batch goes in one statement (`_PG_BATCH`); only messages it could not insert
    (a retried job, a seq another message took) go through `persist_messages`, in the caller's
    transaction. Elsewhere (SQLite in dev mode) everything does.
    """
    if not jobs:
        return [], {}
    if session.get_bind().dialect.name != "postgresql":
        # Participants first: the write ends with the row locks on conversations, held to the commit.
        members = await recipients(session, [j.conversation_id for j in jobs])
        return await persist_messages(session, jobs, sequencer), members
    inserted, members = await _insert_batch(session, jobs)
    rest = [j for j in jobs if j.message_id not in inserted]
    earlier = dict(
        zip((j.message_id for j in rest), await persist_messages(session, rest, sequencer), strict=True)
    )
    stored = [(_out(j, j.seq), False) if j.message_id in inserted else earlier[j.message_id] for j in jobs]
    return stored, members


async def _insert_batch(
    session: AsyncSession, jobs: Sequence[PersistMessage]
) -> tuple[set[uuid.UUID], Members]:
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection  # asyncpg's: it caches the plan
    try:
        rows = await driver.fetch(
            _PG_BATCH,
            [j.message_id for j in jobs],
            [j.conversation_id for j in jobs],
            [j.seq for j in jobs],
            [j.sender_id for j in jobs],
            [j.body for j in jobs],
            [j.client_id for j in jobs],
            [j.client_digest for j in jobs],
            [j.created_at.astimezone(UTC) for j in jobs],
            [j.reply_to for j in jobs],
            [j.kind for j in jobs],
        )
    except BaseException as exc:
        if _connection_lost(exc):
            # SQLAlchemy never saw this error: without being told, its pool would hand the dead
            # connection out again, forever.
            await connection.invalidate(exc if isinstance(exc, Exception) else None)
        raise
    inserted: set[uuid.UUID] = set()
    members: Members = defaultdict(list)
    for is_insert, a, b in rows:
        if is_insert:
            inserted.add(a)
        else:
            members[a].append(b)
    return inserted, members


def _connection_lost(exc: BaseException) -> bool:
    """Whether the connection may be unusable after `exc`: anything but an error the server
    reported on a healthy connection (a constraint, a deadlock) leaves its state unknown."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "")).startswith(("08", "57P"))
    return True


async def persist_messages(
    session: AsyncSession, jobs: Sequence[PersistMessage], sequencer: Sequencer
) -> list[tuple[MessageOut, bool]]:
    """Store a batch of queued messages in the caller's transaction: in job order, each stored row
    and whether it was stored before this batch.

    One multi-row insert for the whole batch. A message already stored (a retried job, or a
    client_id repeated after its claim expired) is returned as stored; a message whose seq another
    message took (the Redis counter was lost and restarted too low) gets the next free number.
    """
    if not jobs:
        return []
    # executemany with RETURNING: one round trip for the batch (insertmanyvalues), and a statement
    # that compiles once, unlike a VALUES list whose shape changes with every batch size.
    connection = await session.connection()
    result = await connection.execute(
        _insert(session)(Message).on_conflict_do_nothing().returning(Message.id),
        [_row(j, j.seq) for j in jobs],
    )
    inserted = set(result.scalars())
    stored: dict[uuid.UUID, MessageOut] = {}
    before: set[uuid.UUID] = set()
    for job in jobs:
        if job.message_id in inserted:
            stored[job.message_id] = _out(job, job.seq)
    await _count_replies(session, [j for j in jobs if j.message_id in inserted])
    rest = [j for j in jobs if j.message_id not in inserted]
    if rest:
        existing = await session.scalars(select(Message).where(Message.id.in_([j.message_id for j in rest])))
        for row in existing:
            stored[row.id] = MessageOut.model_validate(row)
            before.add(row.id)
        for job in rest:
            if job.message_id not in stored:
                stored[job.message_id] = await _take_next_free_seq(session, job, sequencer)

    await _advance_conversations(session, list(stored.values()))
    return [(stored[j.message_id], j.message_id in before) for j in jobs]


_conversations = cast(Table, Conversation.__table__)
_ADVANCE = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("cid"))
    .values(
        last_seq=case(
            (_conversations.c.last_seq < bindparam("top"), bindparam("top")), else_=_conversations.c.last_seq
        ),
        last_activity_at=case(
            (_conversations.c.last_activity_at < bindparam("latest", type_=UTCDateTime), bindparam("latest")),
            else_=_conversations.c.last_activity_at,
        ),
    )
)


async def _advance_conversations(session: AsyncSession, messages: list[MessageOut]) -> None:
    """Move each conversation's last_seq and activity forward: one statement, one round trip.

    In id order, so that two workers' batches over the same conversations take the row locks in
    the same order and wait for each other instead of deadlocking. Callers issue it last before
    the commit: the locks are held only from here to the commit.
    """
    newest: dict[uuid.UUID, tuple[int, datetime]] = {}
    for m in messages:
        top, latest = newest.get(m.conversation_id, (0, m.created_at))
        newest[m.conversation_id] = (max(top, m.seq), max(latest, m.created_at))
    params = [{"cid": cid, "top": top, "latest": latest} for cid, (top, latest) in sorted(newest.items())]
    if params:
        connection = await session.connection()
        await connection.execute(_ADVANCE, params)


_messages = cast(Table, Message.__table__)
_THREAD = (
    update(_messages)
    .where(_messages.c.id == bindparam("parent"))
    .values(
        reply_count=_messages.c.reply_count + bindparam("replies"),
        last_reply_at=case(
            (_messages.c.last_reply_at.is_(None), bindparam("latest", type_=UTCDateTime)),
            (_messages.c.last_reply_at < bindparam("latest"), bindparam("latest")),
            else_=_messages.c.last_reply_at,
        ),
    )
)


async def _count_replies(session: AsyncSession, stored_now: Sequence[PersistMessage]) -> None:
    """Each parent counts the replies stored now and knows its newest (the statement `_PG_BATCH`
    does the same on Postgres's fast path)."""
    threads: dict[uuid.UUID, tuple[int, datetime]] = {}
    for job in stored_now:
        if job.reply_to is not None:
            replies, latest = threads.get(job.reply_to, (0, job.created_at))
            threads[job.reply_to] = (replies + 1, max(latest, job.created_at))
    if threads:
        connection = await session.connection()
        params = [{"parent": p, "replies": n, "latest": t} for p, (n, t) in sorted(threads.items())]
        await connection.execute(_THREAD, params)


async def _take_next_free_seq(session: AsyncSession, job: PersistMessage, sequencer: Sequencer) -> MessageOut:
    for _ in range(MAX_RESEQUENCE):
        await sequencer.raise_to(job.conversation_id, await persisted_max_seq(session, job.conversation_id))
        seq = await sequencer.next(job.conversation_id)
        inserted = await session.scalar(
            _insert(session)(Message).values(_row(job, seq)).on_conflict_do_nothing().returning(Message.id)
        )
        if inserted is not None:
            await _count_replies(session, [job])
            return _out(job, seq)
        existing = await session.get(Message, job.message_id)
        if existing is not None:
            return MessageOut.model_validate(existing)
    raise RuntimeError(f"could not find a free seq for message {job.message_id}")


async def edit_message(session: AsyncSession, job: EditMessage) -> Message | None:
    """Apply an edit unless a newer one or a delete won; the message if this edit is its current state."""
    await session.execute(
        update(Message)
        .where(
            Message.id == job.message_id,
            Message.deleted.is_(False),
            (Message.edited_at.is_(None)) | (Message.edited_at < job.edited_at),
        )
        .values(body=job.body, edited_at=job.edited_at)
    )
    message = await session.get(Message, job.message_id, populate_existing=True)
    if message is None or message.deleted or message.edited_at != job.edited_at:
        return None
    return message


async def delete_message(session: AsyncSession, job: DeleteMessage) -> Message | None:
    await session.execute(
        update(Message)
        .where(Message.id == job.message_id, Message.deleted.is_(False))
        .values(deleted=True, body=None)
    )
    message = await session.get(Message, job.message_id, populate_existing=True)
    if message is not None and message.deleted:
        # Its files go with it: readers see none from now on, and the sweep deletes the bytes.
        await attachments.discard_of_message(session, message.id, datetime.now(UTC))
    return message


_participants = cast(Table, Participant.__table__)
_RECIPIENTS = select(_participants.c.conversation_id, _participants.c.user_id).where(
    _participants.c.conversation_id.in_(bindparam("ids", expanding=True))
)


async def react(session: AsyncSession, job: React) -> bool:
    """Apply an add or a remove unless a later change to the same reaction won; whether the
    reaction appeared or went away (only then is there an event to publish)."""
    key = (job.message_id, job.user_id, job.emoji)
    for _ in range(2):
        row = await session.get(Reaction, key, with_for_update=True, populate_existing=True)
        if row is None:
            values = {
                "message_id": job.message_id,
                "user_id": job.user_id,
                "emoji": job.emoji,
                "present": job.present,
                "changed_at": job.changed_at,
            }
            added = await session.execute(_insert(session)(Reaction).values(values).on_conflict_do_nothing())
            if cast(Any, added).rowcount == 1:
                return job.present  # a removal of what never was is recorded, and changes nothing
            continue  # another worker stored it meanwhile: read it again, locked
        if row.changed_at >= job.changed_at:
            return False
        changed = row.present != job.present
        row.present, row.changed_at = job.present, job.changed_at
        return changed
    raise RuntimeError(f"reaction {key} kept changing under this job")


async def recipients(
    session: AsyncSession, conversation_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Participants of each conversation, read in the same transaction as the write."""
    # On the Core connection: the ORM's per-statement bookkeeping cost more than the query.
    connection = await session.connection()
    rows = await connection.execute(_RECIPIENTS, {"ids": list(set(conversation_ids))})
    members: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for conversation_id, user_id in rows:
        members[conversation_id].append(user_id)
    return members
