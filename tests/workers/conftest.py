"""Run the real arq worker in burst mode inside the test's event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chat.settings import Settings
from workers.main import create_worker

RunWorker = Callable[..., Awaitable[int]]


@pytest.fixture
def run_worker(settings: Settings) -> RunWorker:
    """Drain the queue with a real worker; returns the number of jobs completed."""

    async def run(**overrides: Any) -> int:
        worker = create_worker(settings, burst=True, handle_signals=False, poll_delay=0.01, **overrides)
        try:
            await worker.main()
        finally:
            await worker.close()
        completed: int = worker.jobs_complete
        return completed

    return run
