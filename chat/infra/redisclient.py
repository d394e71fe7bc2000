"""Redis clients. `memory://` gives an in-process fake Redis for the embedded dev mode and unit tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.asyncio import ConnectionPool

from chat.jobqueue.connection import ArqRedis, client_options
from chat.settings import Settings

if TYPE_CHECKING:
    import fakeredis

# One fake server per memory:// URL, so the api, worker and push running in one process share it,
# exactly as separate processes share one real Redis.
_memory_servers: dict[str, fakeredis.FakeServer] = {}


def _fake_server(url: str) -> fakeredis.FakeServer:
    # Imported on first use: only the dev mode and unit tests need it, and it costs every
    # deployed process memory.
    import fakeredis

    server = _memory_servers.get(url)
    if server is None:
        server = _memory_servers[url] = fakeredis.FakeServer()
    return server


class MemoryArqRedis(ArqRedis):
    """The fake server lacks INFO, which arq's worker calls once at startup to log the version."""

    async def info(self, section: str | None = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"redis_version": "fakeredis", "mem_peak_human": "n/a", "connected_clients": 1}


def create_redis(settings: Settings, *, max_connections: int | None = None) -> ArqRedis:
    """A Redis client that is also an arq pool (it can enqueue jobs), configured for JSON jobs."""
    options = client_options(settings.queue_name)
    url = settings.redis_url
    if url.startswith("memory://"):
        from fakeredis.aioredis import FakeAsyncRedisConnection

        pool = ConnectionPool(connection_class=FakeAsyncRedisConnection, server=_fake_server(url))
        return MemoryArqRedis(pool, **options)
    pool = ConnectionPool.from_url(url, max_connections=max_connections)
    return ArqRedis(pool, **options)
