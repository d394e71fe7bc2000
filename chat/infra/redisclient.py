"""Redis clients for the three topologies REDIS_MODE names, and `memory://`, an in-process fake
Redis for the embedded dev mode and unit tests.

- standalone: REDIS_URL is the Redis.
- sentinel: REDIS_URL lists the sentinels (`redis+sentinel://h1:26379,h2:26379/0`); the client
  asks them for REDIS_SENTINEL_MASTER's address and again after every lost connection, so a
  failover needs no restart.
- cluster: REDIS_URL names one node; redis-py's RedisCluster routes each command by its key's
  slot and follows MOVED after a failover. Every multi-key script and transaction stays in one
  slot (`chat.jobqueue.shards`, and users' keys share their id as hash tag).

Every client learns, on each new connection, whether the Redis behind it restarted or failed over
since it was last seen (`chat.infra.restarts`), before the connection carries any command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from chat.infra import restarts
from chat.jobqueue.connection import ArqRedis, client_options
from chat.jobqueue.shards import Shards
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


# Stands for "no default node" while a cluster client is closed for a retry; never connected.
_NO_NODE = ClusterNode("", 0)


class ClusterArqRedis(RedisCluster):
    """A cluster client that carries what the product reads off an arq pool (the queue's name and
    the job codec); arq's own enqueue_job is never used on a cluster (its WATCH/MULTI crosses slots)."""

    def __init__(
        self, *args: Any, job_serializer: Any, job_deserializer: Any, default_queue_name: str, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.job_serializer = job_serializer
        self.job_deserializer = job_deserializer
        self.default_queue_name = default_queue_name
        self.expires_extra_ms = 86_400_000

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        # Callers written for redis.asyncio.Redis ask for the pool too; a cluster client owns its
        # nodes' pools and closes them all.
        await super().aclose()

    def get_default_node(self) -> ClusterNode:
        # One coroutine's pipeline that meets a dead node closes the shared client, which empties
        # its default node, and retries. Another pipeline in flight then has its answers and asks
        # the default node's name only to decide whether to replace it: None raised
        # AttributeError (redis-py 5.3), losing answers Redis had given, and ended the worker.
        # A node of no name is simply not the one any pipeline used.
        node: ClusterNode | None = self.nodes_manager.default_node
        return node if node is not None else _NO_NODE


def create_redis(settings: Settings, *, max_connections: int | None = None) -> ArqRedis:
    """A Redis client that is also an arq pool (it can enqueue jobs), configured for JSON jobs.

    It carries the key layout (`chat.jobqueue.shards.shards_of`)."""
    options = client_options(settings.queue_name)
    url = settings.redis_url
    shards = Shards.from_settings(settings)
    client: Any
    if url.startswith("memory://"):
        from fakeredis.aioredis import FakeAsyncRedisConnection

        pool = ConnectionPool(connection_class=FakeAsyncRedisConnection, server=_fake_server(url))
        client = MemoryArqRedis(pool, **options)
    elif settings.redis_mode == "cluster":
        node = urlsplit(url)
        client = ClusterArqRedis(  # type: ignore[abstract]  # redis-py's stubs, not the class
            host=node.hostname or "127.0.0.1",
            port=node.port or 6379,
            username=node.username,
            password=node.password,
            max_connections=max_connections or 2**31,
            **options,
        )
        # RedisCluster takes no redis_connect_func; its nodes take it from these keyword arguments.
        connect = restarts.hook(shards)
        client.connection_kwargs["redis_connect_func"] = connect
        for startup in client.nodes_manager.startup_nodes.values():
            startup.connection_kwargs["redis_connect_func"] = connect
    elif settings.redis_mode == "sentinel":
        sentinels, db, password = _sentinels(url)
        sentinel = Sentinel(sentinels, socket_timeout=None)  # type: ignore[no-untyped-call]
        client = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=ArqRedis,
            db=db,
            password=password,
            max_connections=max_connections,
            redis_connect_func=restarts.hook(shards),
        )
        # master_for hands every keyword to the connections: the arq pool's own ones go on after.
        for name, value in options.items():
            setattr(client, name, value)
    else:
        pool = ConnectionPool.from_url(
            url, max_connections=max_connections, redis_connect_func=restarts.hook(shards)
        )
        client = ArqRedis(pool, **options)
    client.chat_shards = shards
    client.chat_mode = "memory" if url.startswith("memory://") else settings.redis_mode
    return cast(ArqRedis, client)


def _sentinels(url: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """`redis+sentinel://[:password@]h1:p1,h2:p2/db` → the sentinels' addresses, the db, the password."""
    rest = url.split("://", 1)[1]
    auth, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    password = auth.split(":", 1)[1] if ":" in auth else (auth or None)
    addresses = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        addresses.append((name or host, int(port or 26379)))
    db = int(path.strip("/") or 0)
    return addresses, db, password


def is_cluster(redis: Any) -> bool:
    return getattr(redis, "chat_mode", "standalone") == "cluster"
