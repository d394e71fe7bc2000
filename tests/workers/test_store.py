"""The worker's writes on real Postgres: concurrent batches, and which database errors are transient."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from api.deps import Deps
from chat.domain.sequence import Sequencer
from chat.infra.failures import is_transient
from chat.jobqueue.jobs import PersistMessage
from tests.support import ApiClient
from workers import store


def _job(conversation_id: str, sender: str, seq: int) -> PersistMessage:
    return PersistMessage(
        message_id=uuid.uuid4(),
        conversation_id=uuid.UUID(conversation_id),
        sender_id=uuid.UUID(sender),
        seq=seq,
        body=f"seq {seq}",
        client_id=None,
        created_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("write_with", ["persist_batch", "persist_messages"])
async def test_batches_over_the_same_conversations_in_any_order_do_not_deadlock(
    api: ApiClient, deps: Deps, write_with: str
) -> None:
    # persist_batch is the worker's one-statement write; persist_messages what it falls back to.
    alice = await api.user()
    others = [await api.user() for _ in range(8)]
    cids = [(await api.conversation(alice, o, kind="direct"))["id"] for o in others]
    sequencer = Sequencer(deps.redis)
    seq = 0

    async def write(batch: list[PersistMessage]) -> None:
        async with deps.sessions() as session:
            await getattr(store, write_with)(session, batch, sequencer)
            await session.commit()

    for _ in range(4):
        forward, backward = [], []
        for cid in cids:
            seq += 1
            forward.append(_job(cid, alice.id, seq))
        for cid in reversed(cids):
            seq += 1
            backward.append(_job(cid, alice.id, seq))
        # Two workers' batches touching the same conversations in opposite orders, at once.
        await asyncio.gather(write(forward), write(backward))
    async with deps.engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT count(*) FROM messages WHERE sender_id = :a"), {"a": alice.id}
        )
        rows = await conn.execute(
            text("SELECT id, last_seq FROM conversations WHERE created_by = :a"), {"a": alice.id}
        )
        tops: dict[uuid.UUID, int] = {row.id: row.last_seq for row in rows}
    assert stored == seq
    # Each conversation's last_seq moved forward to its newest message, whichever batch won.
    assert {str(cid): top for cid, top in tops.items()} == {cid: seq - i for i, cid in enumerate(cids)}


async def _deadlock(deps: Deps) -> BaseException:
    """Provoke a real deadlock between two transactions; the error the loser sees."""
    alice_id = uuid.uuid4()
    async with deps.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (id, username, username_key, display_name, password_hash, is_admin,"
                " created_at) VALUES (:id, 'dl', 'dl', 'dl', 'x', false, now())"
            ),
            {"id": alice_id},
        )
        for name in ("a", "b"):
            await conn.execute(
                text(
                    "INSERT INTO conversations (id, kind, title, created_by, created_at, last_seq,"
                    " last_activity_at) VALUES (:id, 'group', :t, :u, now(), 0, now())"
                ),
                {"id": uuid.uuid5(alice_id, name), "t": name, "u": alice_id},
            )
    a, b = uuid.uuid5(alice_id, "a"), uuid.uuid5(alice_id, "b")
    bump = text("UPDATE conversations SET last_seq = last_seq + 1 WHERE id = :id")
    first_locked, second_locked = asyncio.Event(), asyncio.Event()

    async def one(mine: uuid.UUID, theirs: uuid.UUID, locked: asyncio.Event, other: asyncio.Event) -> None:
        async with deps.engine.begin() as conn:
            await conn.execute(bump, {"id": mine})
            locked.set()
            await other.wait()
            await conn.execute(bump, {"id": theirs})

    results = await asyncio.gather(
        one(a, b, first_locked, second_locked),
        one(b, a, second_locked, first_locked),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    return errors[0]


async def test_deadlocks_and_serialization_failures_are_transient(deps: Deps) -> None:
    deadlock = await _deadlock(deps)
    assert isinstance(deadlock, DBAPIError) and "deadlock" in str(deadlock).lower()
    assert is_transient(deadlock)

    async with deps.engine.connect() as first, deps.engine.connect() as second:
        await first.execute(text("BEGIN ISOLATION LEVEL SERIALIZABLE"))
        await second.execute(text("BEGIN ISOLATION LEVEL SERIALIZABLE"))
        await first.execute(text("SELECT count(*) FROM conversations"))
        await second.execute(text("SELECT count(*) FROM conversations"))
        await first.execute(text("UPDATE conversations SET title = 'x' WHERE title = 'a'"))
        await second.execute(text("UPDATE conversations SET title = 'y' WHERE title = 'b'"))
        await first.execute(text("COMMIT"))
        with pytest.raises(DBAPIError) as caught:
            await second.execute(text("COMMIT"))
        await second.rollback()
    assert "serialize" in str(caught.value).lower()
    assert is_transient(caught.value)


async def test_a_pooled_connection_closed_under_the_batch_is_transient(deps: Deps) -> None:
    """After Postgres restarts, the pool still holds connections to the old server; the batch
    write, which speaks to asyncpg directly, meets one as `InterfaceError: connection is closed`.
    That is the database having been away, not a broken job: it must be retried, not dead-lettered."""
    async with deps.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.close()
        with pytest.raises(asyncpg.InterfaceError) as caught:
            await driver.fetch("SELECT 1")
        await connection.invalidate()
    assert "closed" in str(caught.value)
    assert is_transient(caught.value)


def test_an_outage_is_logged_once_however_many_jobs_hit_it(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from chat.infra.outage import Outages

    outages = Outages(logging.getLogger("workers.tasks"))
    with caplog.at_level(logging.WARNING, logger="workers.tasks"):
        for _ in range(500):
            outages.down(ConnectionRefusedError("connect call failed ('127.0.0.1', 5432)"))
        outages.up()
        outages.up()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "unreachable" in lines[0] and "reachable again" in lines[1]
