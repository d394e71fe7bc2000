"""The Redis client that is also an arq pool (it can enqueue and read jobs), set up for JSON jobs."""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis

from chat.jobqueue.codec import deserialize, serialize

__all__ = ["ArqRedis", "client_options"]


def client_options(queue_name: str) -> dict[str, Any]:
    return {"job_serializer": serialize, "job_deserializer": deserialize, "default_queue_name": queue_name}
