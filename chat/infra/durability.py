"""What a `202` promises, read off the queue's Redis at start.

A send is answered `202` once the send script has run on the queue's Redis primary: the message
then exists only in that Redis until a worker stores it. Whether a crash of that Redis can lose it
depends on how the Redis persists (`docs/operations.md`, "What a 202 promises"):

- `appendonly yes` with `appendfsync always`: nothing answered is lost;
- `appendfsync everysec` (Redis's default once AOF is on): up to about a second of sends;
- `appendonly no`: everything since the last snapshot, which may be minutes;
- ACCEPT_DURABILITY=replica: the write is on a replica before `202`, so a primary that dies is
  replaced by one that has it, whatever either persists.

Each process says which case it runs in, once, at start; a managed Redis that refuses CONFIG is
judged by INFO alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chat.infra.redisclient import is_cluster
from chat.settings import Settings


@dataclass(frozen=True, slots=True)
class Persistence:
    aof: bool
    fsync: str | None  # always, everysec, no; None when CONFIG is refused
    replicas: int


async def read(redis: Any) -> list[Persistence]:
    """Each primary's persistence (one on a single Redis, every master of a cluster)."""
    if is_cluster(redis):
        nodes = redis.get_primaries()
        found = []
        for node in nodes:
            found.append(await _one(lambda *a, node=node: redis.execute_command(*a, target_nodes=node)))
        return found
    return [await _one(redis.execute_command)]


async def _one(run: Any) -> Persistence:
    persistence = _info(await run("INFO", "persistence"))
    replication = _info(await run("INFO", "replication"))
    fsync: str | None
    try:
        reply = await run("CONFIG", "GET", "appendfsync")
        values = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=False))
        raw = values.get("appendfsync", values.get(b"appendfsync"))
        fsync = raw.decode() if isinstance(raw, bytes) else raw
    except Exception:
        fsync = None  # managed Redis services often refuse CONFIG
    return Persistence(
        aof=str(persistence.get("aof_enabled", "0")) == "1",
        fsync=fsync,
        replicas=int(replication.get("connected_slaves", 0) or 0),
    )


def _info(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return reply
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
    return {key: value.strip() for key, value in pairs}


def judge(settings: Settings, found: list[Persistence]) -> list[str]:
    """The warnings an operator needs: how accepted messages could be lost, or refused."""
    problems: list[str] = []
    replica = settings.accept_durability == "replica"
    if replica and any(p.replicas == 0 for p in found):
        problems.append(
            "ACCEPT_DURABILITY=replica but a queue Redis primary has no connected replica: "
            "sends get 503 until one connects"
        )
    if replica:
        return problems
    if any(not p.aof for p in found):
        problems.append(
            "the queue's Redis runs with appendonly no: a crash of it loses every message answered "
            "202 since its last snapshot and not yet stored (set appendonly yes and appendfsync "
            "always, or ACCEPT_DURABILITY=replica; see docs/operations.md)"
        )
    elif any(p.fsync == "no" for p in found):
        problems.append(
            "the queue's Redis runs with appendfsync no: a crash of its machine loses up to ~30 s of "
            "messages answered 202 (appendfsync always, or ACCEPT_DURABILITY=replica, loses none)"
        )
    elif any(p.fsync == "everysec" for p in found):
        problems.append(
            "the queue's Redis runs with appendfsync everysec: a crash of its machine can lose up to "
            "1 s of messages answered 202 (appendfsync always, or ACCEPT_DURABILITY=replica, loses none)"
        )
    return problems


async def report(redis: Any, settings: Settings, log: logging.Logger) -> None:
    """Log, once at start, how a crash of the queue's Redis could lose accepted messages."""
    if getattr(redis, "chat_mode", "") == "memory":
        return  # the dev mode's in-process Redis: nothing outlives the process anyway
    try:
        found = await read(redis)
    except (
        Exception
    ) as exc:  # Redis away at start: the process rides it out; this check waits for the next start
        log.warning("could not read the queue Redis's persistence settings: %s", type(exc).__name__)
        return
    for problem in judge(settings, found):
        log.warning("durability: %s", problem)


def report_at_start(settings: Settings, log: logging.Logger) -> None:
    """`report` for a process's entry point, before it serves: on a client of its own, closed after."""
    import asyncio

    from chat.infra.redisclient import create_redis

    async def once() -> None:
        client = create_redis(settings, max_connections=2)
        try:
            await asyncio.wait_for(report(client, settings, log), 5)
        except TimeoutError:
            log.warning("could not read the queue Redis's persistence settings in 5 s")
        finally:
            await client.aclose(close_connection_pool=True)

    asyncio.run(once())
