"""Noticing a Redis that restarted or failed over, before it answers anything.

A Redis that comes back from an older snapshot, or a replica promoted before it had every write,
holds counters from the past: a conversation's `seq` counter would hand out numbers already used.
Each Redis server has a run id that changes on every start, and a replica promoted to master has
its own. On every new connection (every command after a restart or failover goes over one), the
client reads the run id and, when it differs from the one last recorded beside each shard's keys,
records it and bumps that shard's restart epoch. The send script compares the epoch with the one
each conversation's counter was last checked against (`chat.domain.sequence`), and a counter from
before the bump is raised to what Postgres holds before the conversation takes another send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)

if TYPE_CHECKING:
    from chat.jobqueue.shards import Shards


def node_key(tag: str) -> str:
    return f"chat:redis-run-id:{tag}"


def epoch_key(tag: str) -> str:
    return f"chat:redis-epoch:{tag}"


# KEYS: the recorded run id, the epoch. ARGV: this server's run id. 1 when the epoch was bumped.
BUMP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
return 1
"""

# A slot this node does not serve (cluster) is another node's to record: its own connections do.
# (redis-py raises these as their own types, the MOVED/ASK prefix stripped from the message.)
_ELSEWHERE = (MovedError, AskError, ClusterCrossSlotError, ClusterDownError, TryAgainError)
_CODES = ("MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN")


def hook(shards: Shards) -> Callable[[Any], Awaitable[None]]:
    """redis-py's `redis_connect_func`: the usual handshake, then the run id check."""
    tags = [shards.tag(k) for k in shards.all] if shards.tagged else [""]

    async def connect(connection: Any) -> None:
        await connection.on_connect()
        await connection.send_command("INFO", "server")
        info = await connection.read_response()
        run_id = _run_id(info)
        if run_id is None:
            return  # not a Redis that tells (a proxy): nothing to compare
        for tag in tags:
            await connection.send_command("EVAL", BUMP, 2, node_key(tag), epoch_key(tag), run_id)
        for _ in tags:
            try:
                await connection.read_response()
            except ResponseError as exc:
                # A cluster client's parser raises the types (prefix stripped); a plain client's
                # connection to a cluster node, a ResponseError that starts with the code.
                if not isinstance(exc, _ELSEWHERE) and not str(exc).startswith(_CODES):
                    raise  # out of memory, read-only: this connection must not serve sends yet

    return connect


def _run_id(info: Any) -> str | None:
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line.split(":", 1)[1].strip()
    return None
