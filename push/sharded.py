"""Sharded pub/sub (SSUBSCRIBE) on a Redis Cluster: one connection a master node, for the hub.

A channel published with SPUBLISH reaches only the subscribers on the nodes of its slot's shard,
so a push process subscribes each user's channel on the master that serves the user's slot.
redis-py 5.3's asyncio client has no `ssubscribe` and its RedisCluster no pub/sub, so this module
speaks the protocol on plain connections: `SSUBSCRIBE ch` / `SUNSUBSCRIBE ch`, one channel a
command (so replies, errors included, answer the commands in the order they were sent), and it
reads the pushes (`smessage`, `ssubscribe`, `sunsubscribe`) as they come.

A subscription is lost when its node's connection breaks (a master killed or unreachable, before
and during a failover), or when Redis itself drops it: a node that loses a slot (failover,
migration) sends `sunsubscribe` for the channels of that slot. Either way the owner hears which
channels were lost (`on_lost`) and the slot map is learned again, so that the next subscribe
goes to the slot's new master. A subscribe answered MOVED learns the map and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import MovedError, RedisClusterException, RedisError, ResponseError

log = logging.getLogger("push.hub")

CONFIRM_TIMEOUT = 5.0
# A subscribe sent to a node that no longer serves the slot is told MOVED: learn the map, retry.
ATTEMPTS = 3
# What a node or the client can fail with; a cluster client's own errors are no RedisError (a
# slot that no node serves while a replica takes over).
FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
# After a node gave up a slot, the slot map is learned until it names the slot's new node, for at
# most this many rounds: the map comes from one node, which may hear of the change a moment late.
SETTLE_ROUNDS = 20
SETTLE_INTERVAL = 0.1
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")

OnMessage = Callable[[str, bytes], None]
OnLost = Callable[[list[str]], None]


class Moved(RedisError):
    """The node answered a subscribe with a redirection: the slot map is stale."""


class _Link:
    """One connection to one master and the channels subscribed over it."""

    __slots__ = ("channels", "confirmations", "connection", "dead", "name", "pending", "reader")

    def __init__(self, name: str, connection: Connection) -> None:
        self.name = name
        self.connection = connection
        self.channels: set[str] = set()
        # The commands sent and not answered yet, oldest first: (b"ssubscribe" | b"sunsubscribe", channel).
        self.pending: deque[tuple[bytes, str]] = deque()
        self.confirmations: dict[str, asyncio.Future[None]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.dead = False

    async def send(self, kind: bytes, name: str) -> None:
        if self.dead:
            # A dead link's connection would reconnect on send, subscribed to nothing.
            raise ConnectionError(f"the connection to {self.name} is lost")
        self.pending.append((kind, name))
        await self.connection.send_command(kind.decode().upper(), name)


class ShardedChannels:
    def __init__(self, cluster: RedisCluster, on_message: OnMessage, on_lost: OnLost) -> None:
        self._cluster = cluster
        self._on_message = on_message
        self._on_lost = on_lost
        self._links: dict[str, _Link] = {}
        self._where: dict[str, _Link] = {}  # each subscribed channel's link
        self._refreshing: asyncio.Task[None] | None = None
        self._moving: dict[int, str] = {}  # slots a node gave up, and that node, until the map moves them
        self._connecting = asyncio.Lock()

    @property
    def nodes(self) -> dict[str, int]:
        """Channels subscribed on each node (by its host:port), for tests and diagnostics."""
        return {name: len(link.channels) for name, link in self._links.items() if not link.dead}

    def node_of(self, name: str) -> str | None:
        link = self._where.get(name)
        return None if link is None or link.dead else link.name

    async def subscribe(self, name: str) -> None:
        """SSUBSCRIBE `name` on its slot's master; returns once Redis confirmed it."""
        await self._cluster.initialize()  # the slot map (once; a no-op after)
        if self._refreshing is not None and not self._refreshing.done():
            # A node gave up slots: a replica it turned into still takes a subscribe to them (Redis
            # serves a shard's replicas too), so a stale map would subscribe where no message comes.
            await asyncio.shield(self._refreshing)
        for attempt in range(ATTEMPTS):
            try:
                node = self._cluster.get_node_from_key(name)
                if node is None:  # only a replica asked for can be missing; the master is named
                    raise Moved(f"no node serves {name}")
                link = await self._link(node)
            except Moved:
                raise
            except FAILURES:
                # Gone (killed, failing over): the map may already name its successor.
                await self.refresh()
                if attempt == ATTEMPTS - 1:
                    raise
                continue
            confirmed = asyncio.get_running_loop().create_future()
            link.confirmations[name] = confirmed
            link.channels.add(name)
            self._where[name] = link
            try:
                await link.send(b"ssubscribe", name)
                await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_TIMEOUT)
                return
            except Moved:
                self._forget(link, name)
                await self.refresh()
                if attempt == ATTEMPTS - 1:
                    raise
            except BaseException:
                self._forget(link, name)
                raise

    async def unsubscribe(self, name: str) -> None:
        link = self._where.pop(name, None)
        if link is None or link.dead:
            return
        link.channels.discard(name)
        with contextlib.suppress(*FAILURES):
            await link.send(b"sunsubscribe", name)

    def _forget(self, link: _Link, name: str) -> None:
        link.channels.discard(name)
        link.confirmations.pop(name, None)
        if self._where.get(name) is link:
            del self._where[name]

    async def _link(self, node: ClusterNode) -> _Link:
        link = self._links.get(node.name)
        if link is not None and not link.dead:
            return link
        async with self._connecting:  # two joins at once must not open two links to one node
            link = self._links.get(node.name)
            if link is not None and not link.dead:
                return link
            options = self._cluster.get_connection_kwargs()
            # Not the cluster's own connection options: they carry the restart-epoch check, which
            # belongs to connections that carry sends; this one carries subscriptions only.
            connection = Connection(
                host=node.host,
                port=node.port,
                username=options.get("username"),
                password=options.get("password"),
                socket_connect_timeout=CONFIRM_TIMEOUT,
                socket_keepalive=True,
            )
            await connection.connect()  # type: ignore[no-untyped-call]
            link = self._links[node.name] = _Link(node.name, connection)
            link.reader = asyncio.create_task(self._read(link), name=f"push-hub-shard-{node.name}")
            return link

    async def _read(self, link: _Link) -> None:
        try:
            while True:
                try:
                    reply = await link.connection.read_response()
                except ResponseError as exc:  # a command's error: the oldest unanswered one's
                    self._refused(link, exc)
                    continue
                if isinstance(reply, list) and len(reply) == 3:
                    self._dispatch(link, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("sharded pub/sub connection to %s lost (%s); restarting its sockets", link.name, exc)
            self._drop(link, ConnectionError(f"sharded pub/sub connection to {link.name} lost"))

    def _dispatch(self, link: _Link, reply: list[Any]) -> None:
        kind, raw, data = reply
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        if kind == b"smessage":
            self._on_message(name, data)
        elif kind == b"ssubscribe":
            if link.pending and link.pending[0] == (kind, name):
                link.pending.popleft()
            confirmed = link.confirmations.pop(name, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind == b"sunsubscribe":
            if link.pending and link.pending[0] == (kind, name):
                link.pending.popleft()  # the answer to our own SUNSUBSCRIBE
                return
            # Redis dropped it: the channel's slot moved to another node.
            log.warning("%s dropped %s (its slot moved); restarting its sockets", link.name, name)
            self._forget(link, name)
            self._moving[self._cluster.keyslot(name)] = link.name
            self._refresh_soon()
            self._on_lost([name])

    def _refused(self, link: _Link, exc: ResponseError) -> None:
        if not link.pending:
            return
        kind, name = link.pending.popleft()
        confirmed = link.confirmations.pop(name, None)
        if kind != b"ssubscribe" or confirmed is None or confirmed.done():
            return
        redirect = isinstance(exc, MovedError) or str(exc).startswith(_REDIRECTS)
        confirmed.set_exception(Moved(str(exc)) if redirect else exc)

    def _drop(self, link: _Link, exc: Exception) -> None:
        """The link is gone: every channel on it is lost, and its node may be too."""
        if link.dead:
            return
        link.dead = True  # before anything awaits: no join may subscribe over it any more
        if self._links.get(link.name) is link:
            del self._links[link.name]
        lost = list(link.channels)
        link.channels.clear()
        for name in lost:
            if self._where.get(name) is link:
                del self._where[name]
        for confirmed in link.confirmations.values():
            if not confirmed.done():
                confirmed.set_exception(exc)
        link.confirmations.clear()
        link.pending.clear()
        self._refresh_soon()
        self._on_lost(lost)
        asyncio.get_running_loop().create_task(link.connection.disconnect(nowait=True))

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._settle(), name="push-hub-slot-map")

    async def _settle(self) -> None:
        for _ in range(SETTLE_ROUNDS):
            await self.refresh()
            cache = self._cluster.nodes_manager.slots_cache
            self._moving = {
                slot: node
                for slot, node in self._moving.items()
                if slot in cache and cache[slot][0].name == node
            }
            if not self._moving:
                return
            await asyncio.sleep(SETTLE_INTERVAL)
        log.warning("the slot map still names the nodes that gave up slots %s", sorted(self._moving))
        self._moving.clear()

    async def refresh(self) -> None:
        """Learn the slot map again (after a failover, the slot's new master)."""
        try:
            await self._cluster.nodes_manager.initialize()
        except FAILURES as exc:
            log.warning("could not learn the cluster's slot map again: %s", exc)

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        self._where.clear()
        for link in links:
            link.dead = True
            if link.reader is not None:
                link.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await link.reader
            with contextlib.suppress(Exception):
                await link.connection.disconnect()
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refreshing
