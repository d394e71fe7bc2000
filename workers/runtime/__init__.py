"""The worker runtime: ChatWorker, arq's worker with a loop of its own (`worker.py`, and the parts
it is made of). With `chat.jobqueue`, the only code that imports arq."""

from __future__ import annotations

from arq.worker import func

from workers.runtime.worker import ChatWorker

__all__ = ["ChatWorker", "func"]
