"""`headless-chat jobs retry|discard` do what the admin routes do, through the same use cases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.deps import Deps
from chat import cli
from chat.jobqueue import deadletters
from chat.jobqueue.lanes import Queues


async def _run(deps: Deps, *argv: str) -> int:
    args = cli.parser().parse_args(["jobs", *argv])
    return await cli._jobs_command(deps.redis, Queues.from_settings(deps.settings), args)


def _entry(job_id: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "function": "edit_message",
        "args": [{"i": 1}],
        "error": "boom",
        "failed_at": datetime.now(UTC).isoformat(),
        "tries": 3,
    }


async def test_retry_requeues_once_and_says_why_it_cannot_again(
    deps: Deps, capsys: pytest.CaptureFixture[str]
) -> None:
    await deadletters.record(deps.redis, _entry("edit:cli"), 100, 3600)
    assert await _run(deps, "retry", "edit:cli") == cli.EXIT_OK
    assert "edit:cli queued again" in capsys.readouterr().out
    assert await deadletters.get(deps.redis, "edit:cli") is None
    assert await deps.redis.zscore(deps.settings.queue_name, "edit:cli") is not None

    assert await _run(deps, "retry", "edit:cli") == cli.EXIT_FAILED
    assert "edit:cli is not a dead letter" in capsys.readouterr().err
    # A stale entry for a job that is queued again: not queued twice.
    await deadletters.record(deps.redis, _entry("edit:cli"), 100, 3600)
    assert await _run(deps, "retry", "edit:cli") == cli.EXIT_FAILED
    assert "edit:cli is queued or running already" in capsys.readouterr().err


async def test_discard_drops_a_dead_letter_once(deps: Deps, capsys: pytest.CaptureFixture[str]) -> None:
    await deadletters.record(deps.redis, _entry("edit:gone"), 100, 3600)
    assert await _run(deps, "discard", "edit:gone") == cli.EXIT_OK
    assert "edit:gone discarded" in capsys.readouterr().out
    assert await _run(deps, "discard", "edit:gone") == cli.EXIT_FAILED
    assert "edit:gone is not a dead letter" in capsys.readouterr().err
