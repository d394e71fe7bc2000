"""Message search on a larger table: `python -m bench.search [--messages N]`.

Fills a migrated database of its own with N messages (200,000 by default) in 200 conversations,
six words each from a vocabulary of 5,000 skewed like language (w0 is in about half the messages,
like "the"; w2000 in a few hundred), makes a reader who is in 50 of them, then times the query
`GET /search/messages` runs (chat.domain.search.query, through SQLAlchemy and asyncpg as the api does)
for a first page of 50. Prints one row per query: how many messages match in the whole table,
how many the page held, and the median and worst of 20 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from chat.domain import search
from tests.support.settings import migrated_database

QUERIES = ("w0", "w40", "w2000", "w1 w2", '"w0 w1"', "w3 -w0", "nothingmatches")
RUNS = 20
PAGE = 50


async def fill(dsn: str, messages: int) -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        reader = uuid.uuid4()
        await conn.execute(
            "INSERT INTO users (id, username, username_key, display_name, password_hash, is_admin,"
            " created_at) VALUES ($1, 'reader', 'reader', 'reader', '-', false, now())",
            reader,
        )
        await conn.execute(
            "INSERT INTO conversations (id, kind, created_by, created_at, last_seq, last_activity_at)"
            " SELECT md5('c' || g)::uuid, 'group', $1, now(), 0, now() FROM generate_series(1, 200) g",
            reader,
        )
        await conn.execute(
            "INSERT INTO participants (conversation_id, user_id, role, last_read_seq, muted, joined_at)"
            " SELECT md5('c' || g)::uuid, $1, 'member', 0, false, now() FROM generate_series(1, 50) g",
            reader,
        )
        # random()^4 skews the choice toward small numbers: a few words common, most rare.
        await conn.execute(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, body, created_at, deleted,"
            " reply_count)"
            " SELECT gen_random_uuid(), md5('c' || (1 + g % 200))::uuid, 1 + g / 200, $1,"
            "  (SELECT string_agg('w' || floor(5000 * power(random(), 4))::int, ' ')"
            "   FROM generate_series(1, 6) k WHERE g > 0),"
            "  now() - (g || ' seconds')::interval, false, 0"
            " FROM generate_series(1, $2::int) g",
            reader,
            messages,
        )
        await conn.execute("ANALYZE")
        return reader
    finally:
        await conn.close()


async def measure(url: str, messages: int) -> list[tuple[str, int, int, float, float]]:
    dsn = url.replace("postgresql+asyncpg", "postgresql", 1)
    reader = await fill(dsn, messages)
    engine = create_async_engine(url)
    sessions = async_sessionmaker(engine)
    rows = []
    try:
        conn = await asyncpg.connect(dsn)
        try:
            for q in QUERIES:
                matches = await conn.fetchval(
                    f"SELECT count(*) FROM messages WHERE {search.VECTOR_COLUMN}"
                    " @@ websearch_to_tsquery('simple', $1)",
                    q,
                )
                times = []
                for _ in range(RUNS):
                    async with sessions() as session:
                        started = time.perf_counter()
                        found = (
                            await session.execute(search.query("postgresql", reader, q, PAGE, None))
                        ).all()
                        times.append((time.perf_counter() - started) * 1000)
                rows.append((q, int(matches), len(found), statistics.median(times), max(times)))
        finally:
            await conn.close()
    finally:
        await engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    with migrated_database() as url:
        rows = asyncio.run(measure(url, args.messages))
    print(
        f"search over {args.messages:,} messages, a reader in 50 of 200 conversations, first page of {PAGE}"
    )
    print(f"{'q':<16}{'matches':>9}{'page':>6}{'p50 ms':>9}{'max ms':>9}")
    for q, matches, page, p50, worst in rows:
        print(f"{q:<16}{matches:>9}{page:>6}{p50:>9.1f}{worst:>9.1f}")


if __name__ == "__main__":
    main()
