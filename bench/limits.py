"""The physical limits beside the product: what Postgres and Redis do with nothing in between.

- Postgres: `pgbench` runs the worker's work for a batch (insert the messages, read the
  recipients, advance the conversation, commit; the worker sends it as one statement,
  `workers.store._PG_BATCH`) once per message, and again with 50 messages a transaction as the
  worker batches them, on a durable database of its own.
- Redis: a pipelined redis-py loop runs the api's send script (membership, seq, enqueue) with
  the product's own keys and arguments, and the worker's append-and-publish script.

Each reports rows (or calls) per second and the server's CPU per row, from which the table
derives a ceiling: how many per second one core of that server could do.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import psutil

from bench.meter import services
from chat.domain.membership import members_key
from chat.domain.sequence import counter_key
from chat.infra.redisclient import create_redis
from chat.jobqueue.accept import JobQueue, Send
from chat.jobqueue.jobs import PersistMessage
from chat.realtime.eventbus import RedisPublisher
from chat.realtime.events import MessageCreated
from chat.schemas import MessageOut
from chat.settings import Settings

CONVERSATIONS = 64
BATCH = 50
BODY = "a benchmark message of a typical length, about sixty characters"


def _cid(n: int | str) -> str:
    return f"('00000000-0000-0000-0000-' || lpad(({n})::text, 12, '0'))::uuid"


def _transaction(rows: int) -> str:
    """The worker's statements for one batch of `rows` messages into one conversation."""
    cid = _cid(":c")
    return f"""\\set c random(1, {CONVERSATIONS})
BEGIN;
INSERT INTO messages (id, conversation_id, seq, sender_id, body, client_id, client_digest,
  created_at, edited_at, deleted)
  SELECT gen_random_uuid(), {cid}, nextval('bench_seq'), '{_SENDER}', '{BODY}', NULL, NULL,
    now(), NULL, false FROM generate_series(1, {rows})
  ON CONFLICT DO NOTHING RETURNING id;
SELECT conversation_id, user_id FROM participants WHERE conversation_id = {cid};
UPDATE conversations SET last_seq = GREATEST(last_seq, currval('bench_seq')::int),
  last_activity_at = now() WHERE id = {cid};
COMMIT;
"""


_SENDER = "00000000-0000-0000-0001-000000000001"
_OTHER = "00000000-0000-0000-0001-000000000002"


async def _seed(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"""
            CREATE SEQUENCE IF NOT EXISTS bench_seq;
            INSERT INTO users (id, username, username_key, display_name, password_hash, is_admin, created_at)
            VALUES ('{_SENDER}', 'bench1', 'bench1', 'bench1', '-', false, now()),
                   ('{_OTHER}', 'bench2', 'bench2', 'bench2', '-', false, now());
            INSERT INTO conversations (id, kind, title, direct_key, created_by, created_at, last_seq,
                                       last_activity_at)
            SELECT {_cid("n")}, 'direct', NULL, NULL, '{_SENDER}', now(), 0, now()
            FROM generate_series(1, {CONVERSATIONS}) AS n;
            INSERT INTO participants (conversation_id, user_id, role, last_read_seq, joined_at)
            SELECT {_cid("n")}, u, 'member', 0, now()
            FROM generate_series(1, {CONVERSATIONS}) AS n,
                 unnest(ARRAY['{_SENDER}'::uuid, '{_OTHER}'::uuid]) AS u;
            """
        )
    finally:
        await conn.close()


def _cpu_of(group: str, redis_port: int) -> dict[int, float]:
    found: dict[int, float] = {}
    for process in services(redis_port)[group]:
        try:
            times = process.cpu_times()
        except psutil.Error:  # a backend that exited meanwhile
            continue
        found[process.pid] = times.user + times.system
    return found


def _used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())


def pgbench(url: str, redis_port: int, *, seconds: int, clients: int) -> dict[str, float]:
    """Rows per second and Postgres CPU per row, one message a transaction and BATCH a transaction."""
    asyncio.run(_seed(url))
    parts = urlsplit(url)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for rows in (1, BATCH):
            script = Path(folder) / f"persist_{rows}.sql"
            script.write_text(_transaction(rows))
            before = _cpu_of("postgres", redis_port)
            with subprocess.Popen(
                [
                    "pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
                    "-f", str(script), "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432),
                    "-U", parts.username or "postgres", parts.path.lstrip("/"),
                ],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ) as done:  # fmt: skip
                # pgbench's backends exit with it, and their CPU with them: read it while they run.
                last: dict[int, float] = {}
                while done.poll() is None:
                    last |= _cpu_of("postgres", redis_port)
                    time.sleep(0.1)
                stdout, stderr = done.communicate()
            used = _used(before, last)
            match = re.search(r"tps = ([\d.]+)", stdout)
            if done.returncode != 0 or match is None:
                raise RuntimeError(f"pgbench said:\n{stdout}\n{stderr}")
            rows_s = float(match.group(1)) * rows
            figures[f"rows/s ({rows} a commit)"] = rows_s
            figures[f"postgres cpu ms/row ({rows} a commit)"] = used * 1000 / (rows_s * seconds)
    return figures


async def _redis_loop(settings: Settings, redis_port: int, seconds: float, pipeline: int) -> dict[str, float]:
    redis = create_redis(settings)
    queue = JobQueue(redis)
    publisher = RedisPublisher(redis, stream_maxlen=settings.event_stream_maxlen)
    conversation, sender, receiver = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with redis.pipeline(transaction=False) as seed:
        seed.sadd(members_key(conversation, ""), str(sender), str(receiver))
        seed.set(counter_key(conversation, ""), 0)
        await seed.execute()
    figures: dict[str, float] = {}
    try:
        for name in ("send script", "publish script"):
            calls = 0
            before = _cpu_of("redis", redis_port)
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                async with redis.pipeline(transaction=False) as pipe:
                    for _ in range(pipeline):
                        message = _message(conversation, sender)
                        if name == "send script":
                            send = Send(message, f"persist:{message.message_id}", "d", 60, None)
                            keys, args = queue.accept_call(send)
                            await queue.accept_script(keys=keys, args=args, client=pipe)
                        else:
                            keys, args = publisher.call(_created(message), [sender, receiver])
                            await publisher.script(keys=keys, args=args, client=pipe)
                    await pipe.execute()
                calls += pipeline
            elapsed = time.perf_counter() - started
            used = _used(before, _cpu_of("redis", redis_port))
            figures[f"{name} calls/s"] = calls / elapsed
            figures[f"redis cpu ms/call ({name})"] = used * 1000 / calls
    finally:
        await redis.flushdb()
        await redis.aclose()
    return figures


def _message(conversation: uuid.UUID, sender: uuid.UUID) -> PersistMessage:
    return PersistMessage(
        message_id=uuid.uuid4(),
        conversation_id=conversation,
        sender_id=sender,
        seq=0,
        body=BODY,
        client_id=None,
        created_at=datetime.now(UTC),
    )


def _created(message: PersistMessage) -> MessageCreated:
    row: dict[str, Any] = message.model_dump(exclude={"message_id", "client_digest"})
    row |= {"id": message.message_id, "edited_at": None, "deleted": False}
    return MessageCreated(conversation_id=message.conversation_id, data=MessageOut.model_validate(row))


def redis_scripts(
    settings: Settings, redis_port: int, *, seconds: float, pipeline: int = 100
) -> dict[str, float]:
    """Calls per second of the send and publish scripts, pipelined, and Redis's CPU per call."""
    return asyncio.run(_redis_loop(settings, redis_port, seconds, pipeline))
