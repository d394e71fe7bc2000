"""A job's outbox: the commands it stages (the events it publishes, the jobs it enqueues) for the
MULTI/EXEC that finishes it, so they are written with its completion or not at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.client import Pipeline

Outbox = list[Callable[[Pipeline], Awaitable[Any]]]
