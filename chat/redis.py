"""Redis clients. `memory://` gives an in-process fake Redis for the embedded dev mode and unit tests."""

from __future__ import annotations

from typing import Any

import fakeredis
import orjson
from arq.connections import ArqRedis
from fakeredis.aioredis import FakeAsyncRedisConnection
from redis.asyncio import ConnectionPool

from chat.settings import Settings

# One fake server per memory:// URL, so the api, worker and push running in one process share it,
# exactly as separate processes share one real Redis.
_memory_servers: dict[str, fakeredis.FakeServer] = {}


def _fake_server(url: str) -> fakeredis.FakeServer:
    server = _memory_servers.get(url)
    if server is None:
        server = _memory_servers[url] = fakeredis.FakeServer()
    return server


def serialize_job(obj: Any) -> bytes:
    # Jobs are JSON, never pickle: anyone able to write to Redis could otherwise run code in a worker.
    return orjson.dumps(obj, default=_json_default)


def deserialize_job(data: bytes) -> Any:
    return orjson.loads(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class MemoryArqRedis(ArqRedis):
    """The fake server lacks INFO, which arq's worker calls once at startup to log the version."""

    async def info(self, section: str | None = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"redis_version": "fakeredis", "mem_peak_human": "n/a", "connected_clients": 1}


def create_redis(settings: Settings, *, max_connections: int | None = None) -> ArqRedis:
    """A Redis client that is also an arq pool (it can enqueue jobs), configured for JSON jobs."""
    options: dict[str, Any] = {
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        "default_queue_name": settings.queue_name,
    }
    url = settings.redis_url
    if url.startswith("memory://"):
        pool = ConnectionPool(connection_class=FakeAsyncRedisConnection, server=_fake_server(url))
        return MemoryArqRedis(pool, **options)
    pool = ConnectionPool.from_url(url, max_connections=max_connections)
    return ArqRedis(pool, **options)
