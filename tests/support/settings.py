"""Settings for tests, and migrated databases of their own."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from alembic.config import Config

from alembic import command
from chat.models import Base
from chat.settings import Settings
from tests.support import services

# Every table emptied before each test, children first. DELETE, not TRUNCATE: a test leaves a few
# rows, and TRUNCATE's new files for eleven tables cost 53 ms a test against DELETE's half a
# millisecond (a quarter of make test's time).
EMPTY_TABLES = "; ".join(f"DELETE FROM {table.name}" for table in reversed(Base.metadata.sorted_tables))


def make_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "environment": "test",
        "secret_key": "test-secret-key-" + "x" * 32,
        # Cheap Argon2 parameters: the tests exercise the flow, not the cost.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        # Every test registers and logs in users from one address and sends in bursts; the rate
        # limit tests set these back to what they test.
        "rate_limit_register_per_address": "off",
        "rate_limit_login_per_address": "off",
        "rate_limit_sends_per_user": "off",
        # Attachments on local disk unless a test configures S3: in a scratch directory, not the checkout.
        "uploads_dir": str(Path(tempfile.gettempdir()) / "headless-chat-tests" / "uploads"),
    }
    base.update(overrides)
    if "redis_url" in base and "redis_mode" not in base:
        # The run's Redis may be a cluster (TEST_REDIS_MODE); the mode goes with the URL.
        base["redis_mode"] = services.redis_mode_for(base["redis_url"])
    return Settings(**base)


def migrate(database_url: str) -> None:
    config = Config("alembic.ini")
    config.attributes["settings"] = make_settings(database_url=database_url)
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


@contextlib.contextmanager
def migrated_database(*, durable: bool = False) -> Iterator[str]:
    """A new database at the migrations' head, dropped afterwards; its asyncpg URL."""
    name = services.create_database(durable=durable)
    try:
        url = services.database_url(name)
        migrate(url)
        yield url
    finally:
        services.drop_database(name)


@contextlib.contextmanager
def migrated_private_postgres() -> Iterator[services.PrivatePostgres]:
    """A PostgreSQL cluster of the test's own (to stop and start), at the migrations' head."""
    server = services.private_postgres()
    try:
        migrate(server.url)
        yield server
    finally:
        server.destroy()


# The run_worker fixture (tests/conftest.py): drain the queue with a real worker; jobs completed.
RunWorker = Callable[..., Awaitable[int]]
