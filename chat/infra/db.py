"""Engine and session factory; the same code serves Postgres (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_only

from chat.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        # Hosting platforms hand out plain postgres:// URLs; the async driver is the only one we ship.
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_recycle=1800,
        pool_timeout=settings.database_pool_timeout_seconds,
        # Request values never reach the logs through a database error's message.
        hide_parameters=True,
    )
    event.listen(engine.sync_engine.pool, "checkin", _idle_from_now)
    event.listen(engine.sync_engine.pool, "checkout", _test_if_idle)
    return engine


# After a restart of Postgres every pooled connection is dead, and each one failed the request (or
# job) that drew it: an admin read 40 s after Postgres was back among them. So a connection is
# looked at before it is handed out. One whose server hung up (a restart, a failover, an idle
# timeout) was noticed by the driver already: it is discarded at no cost. One that sat idle a while
# may have lost its server without a word (a network that dropped it): it is tested with a round
# trip. SQLAlchemy's pool_pre_ping tested every checkout, in a transaction of its own (three round
# trips): under load that was a fifth of the api's CPU.
IDLE_BEFORE_TEST_SECONDS = 10.0


def _idle_from_now(dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _test_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    driver = dbapi_connection.driver_connection
    if driver.is_closed():
        # The pool then discards this connection and draws another (SQLAlchemy's documented way).
        raise DisconnectionError("the server closed this pooled connection")
    since = record.info.get("idle_since")
    if since is None or time.monotonic() - since < IDLE_BEFORE_TEST_SECONDS:
        return
    try:
        # The pool's events run inside SQLAlchemy's greenlet, where await_only may wait.
        await_only(driver.fetchrow(";"))
    except Exception as exc:
        raise DisconnectionError("a pooled connection did not answer") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the api read while the in-process worker writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def upsert_insert(session: AsyncSession) -> Any:
    """The session's dialect's INSERT, the one with ON CONFLICT (Postgres's or SQLite's)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


# The session factory, as use cases take it (and resources hand it on, with no sqlalchemy of their own).
Sessions = async_sessionmaker[AsyncSession]
# The engine's AUTOCOMMIT view (single-statement reads on hot paths), named for the same reason.
Reader = AsyncEngine


def create_sessionmaker(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)
