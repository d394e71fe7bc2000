"""What the worker's log must never hold: a webhook URL's credentials or query, a database error's
values (Postgres's DETAIL), or a message's body (a job's arguments), on any path to a log line."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.exceptions

from api.deps import Deps
from chat.cli import set_admin
from chat.infra.failures import describe, scrubbed_traceback
from chat.infra.process import configure_logging
from chat.jobqueue import deadletters
from chat.jobqueue.enqueue import QueueWriter
from chat.settings import Settings
from tests.support import ApiClient
from tests.support.messages import send
from tests.support.settings import RunWorker
from tests.support.webhooks import Receiver, quick_deliveries, receiving

BODY = "BODY-MARKER-7f3c9a"
SECRETS = ("HOOKPASS", "QUERYTOKEN123")
KEY_VALUE = "4242-KEY-VALUE"


def _postgres_text(value: str) -> str:
    """An error text as asyncpg writes one, quoting a value in its DETAIL."""
    return f'boom\nDETAIL:  Key (sender_id)=({value}) is not present in table "users".'


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return quick_deliveries(settings, 2, job_max_tries=2)


@pytest.fixture
def production_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The worker's logging as `python -m workers` sets it up, every record captured; the levels
    and filters it changes are put back afterwards."""
    names = ("", "arq.worker", "httpx", "httpcore")
    saved = [
        (logging.getLogger(n), logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in names
    ]
    configure_logging()
    caplog.set_level(logging.DEBUG)
    yield caplog
    for logger, level, filters in saved:
        logger.setLevel(level)
        logger.filters[:] = filters


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured line as a handler would write it, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    # aiohttp's are the test receiver's own (its access log), not the worker's.
    lines = (formatter.format(r) for r in caplog.records if not r.name.startswith("aiohttp"))
    return "\n".join(lines)


async def _dead_letters(deps: Deps) -> list[dict[str, Any]]:
    items, _ = await deadletters.page(deps.redis, limit=50)
    return list(items)


def _persist(conversation_id: str, sender_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "conversation_id": conversation_id,
        "sender_id": str(sender_id),
        "seq": 1,
        "body": BODY,
        "client_id": None,
        "created_at": datetime.now(UTC).isoformat(),
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not ...}


async def test_a_failed_delivery_logs_no_credentials_or_query(
    api: ApiClient, deps: Deps, run_worker: RunWorker, production_logging: pytest.LogCaptureFixture
) -> None:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    alice, _, cid = await api.pair()
    async with receiving(Receiver(then="fail")) as receiver:
        url = receiver.url.replace("http://", "http://hookuser:HOOKPASS@") + "?token=QUERYTOKEN123"
        made = await api.post("/admin/webhooks", admin, json={"url": url, "events": ["message.created"]})
        assert made.status_code == 201, made.text
        await send(api, alice, cid, BODY)
        await run_worker()
        assert len(receiver.received) == 2  # both tries went out, and failed

    logged = _logged(production_logging)
    assert "HTTP 500" in logged  # the failure is logged, with the URL's host and path
    assert "/hook" in logged
    for secret in SECRETS:
        assert secret not in logged
    [dead] = await _dead_letters(deps)
    for secret in SECRETS:
        assert secret not in dead["error"] and secret not in (dead["traceback"] or "")
    assert BODY not in logged


async def test_an_integrity_error_is_logged_by_its_sqlstate_without_its_values(
    api: ApiClient, deps: Deps, run_worker: RunWorker, production_logging: pytest.LogCaptureFixture
) -> None:
    _, _, cid = await api.pair()
    stranger = uuid.uuid4()  # no such user: the insert breaks the sender's foreign key
    writer = QueueWriter(deps.redis, deps.settings.queue_name)
    assert await writer.enqueue("persist_message", [_persist(cid, stranger)], "fk-job")
    await run_worker()

    logged = _logged(production_logging)
    assert "23503" in logged  # foreign_key_violation: what an operator needs to know
    assert str(stranger) not in logged and "Key (" not in logged
    assert BODY not in logged
    [dead] = await _dead_letters(deps)
    assert "23503" in dead["error"]
    assert str(stranger) not in dead["error"] and str(stranger) not in (dead["traceback"] or "")


async def test_a_job_that_fails_validation_logs_no_body(
    api: ApiClient, deps: Deps, run_worker: RunWorker, production_logging: pytest.LogCaptureFixture
) -> None:
    _, _, cid = await api.pair()
    writer = QueueWriter(deps.redis, deps.settings.queue_name)
    # pydantic's error text quotes the invalid input: here the text that should have been a reply's id.
    bad = _persist(cid, uuid.uuid4(), reply_to=BODY)
    assert await writer.enqueue("persist_message", [bad], "bad-job")
    await run_worker()

    logged = _logged(production_logging)
    assert "bad-job" in logged and "reply_to" in logged  # which job, which field
    assert BODY not in logged
    [dead] = await _dead_letters(deps)
    assert "reply_to" in dead["error"]
    assert BODY not in dead["error"] and BODY not in (dead["traceback"] or "")


async def test_a_redis_pipeline_error_is_described_without_its_commands(deps: Deps) -> None:
    """Redis full: redis-py's error quotes the refused command, a job's body included."""
    await deps.redis.config_set("maxmemory", "1")
    try:
        with pytest.raises(redis.exceptions.ResponseError) as caught:
            async with deps.redis.pipeline(transaction=True) as pipe:
                pipe.set("chat:test:full", BODY)
                await pipe.execute()
    finally:
        await deps.redis.config_set("maxmemory", "0")
    assert BODY in str(caught.value)  # what a plain log line of it would hold
    assert BODY not in describe(caught.value) and "maxmemory" in describe(caught.value)
    assert BODY not in scrubbed_traceback(caught.value)


def test_every_line_the_process_writes_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """The last guard, on the process's own handler: whatever a library logs (asyncio's
    "exception was never retrieved", say), URLs lose their secrets and Postgres's DETAIL its
    values before the line is written."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    quieted = [
        (logging.getLogger(n), logging.getLogger(n).level) for n in ("arq.worker", "httpx", "httpcore")
    ]
    root.handlers[:] = []
    try:
        configure_logging()
        log = logging.getLogger("tests.redaction")
        log.error("to %s", "http://hookuser:HOOKPASS@host/cb?token=QUERYTOKEN123")
        try:
            raise RuntimeError(_postgres_text(KEY_VALUE))  # the value is no literal in this line
        except RuntimeError:
            log.exception("failed")
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for logger, level in quieted:
            logger.setLevel(level)
    written = capsys.readouterr().err
    assert "host/cb" in written and "boom" in written
    for secret in (*SECRETS, KEY_VALUE):
        assert secret not in written
