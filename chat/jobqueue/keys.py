"""arq's keys for one job, the channel that wakes idle workers, and the worker records' prefix
(`chat.jobqueue.heartbeats`), which the release script needs too."""

from __future__ import annotations

from arq.constants import (
    default_queue_name,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

JOB_PREFIX = job_key_prefix
IN_PROGRESS_PREFIX = in_progress_key_prefix
RESULT_PREFIX = result_key_prefix
RETRY_PREFIX = retry_key_prefix
DEFAULT_QUEUE = default_queue_name

# `chat:worker:<id>` a live worker's record, `chat:worker:<id>:jobs` the jobs it holds.
WORKER_RECORD_PREFIX = "chat:worker:"

# arq hard-codes this life for the try counter (worker.py, run_job).
RETRY_KEY_SECONDS = 88400
# How long a job body outlives its due time (arq's `expires_extra_ms`).
EXPIRES_EXTRA_MS = expires_extra_ms


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def in_progress_key(job_id: str) -> str:
    return IN_PROGRESS_PREFIX + job_id


def result_key(job_id: str) -> str:
    return RESULT_PREFIX + job_id


def retry_key(job_id: str) -> str:
    return RETRY_PREFIX + job_id


def wake_channel(queue_name: str) -> str:
    """Published on every enqueue so idle ChatWorkers claim at once instead of at the next poll."""
    return f"{queue_name}:wake"
