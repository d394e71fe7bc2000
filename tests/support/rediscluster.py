"""A real Redis Cluster and a real Sentinel setup, started by the tests on free ports (no Docker).

Both are plain `redis-server` processes in directories of their own under a work directory the
caller owns; they die with the test run (PR_SET_PDEATHSIG), as `services._run_redis`'s server does.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

T = TypeVar("T")

SLOTS = 16384
# A master waits 5 s (repl-diskless-sync-delay) for more replicas before the first full sync; each
# master here has one, and the wait was most of a start.
_SYNC_AT_ONCE = ["--repl-diskless-sync-delay", "0"]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a run killed with SIGKILL leaves no server behind.
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports from the OS, held together so that it cannot give one twice."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
    return ports


def _wait(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T:
    """Poll `check` until it gives something other than None (a Redis error counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            result = check()
            if result is not None:
                return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def _query(port: int, *command: str) -> Any:
    """The reply as the server sends it: a connection of its own skips redis-py's response
    callbacks, whose parsed shapes for CLUSTER and SENTINEL replies vary between its versions."""
    connection = redis.Connection(  # type: ignore[no-untyped-call]
        port=port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
    )
    try:
        connection.send_command(*command)  # type: ignore[no-untyped-call]
        return connection.read_response()  # type: ignore[no-untyped-call]
    finally:
        connection.disconnect()  # type: ignore[no-untyped-call]


def _cluster_info(port: int) -> dict[str, str]:
    text = str(_query(port, "CLUSTER", "INFO"))
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def _replication(port: int) -> dict[str, str]:
    """INFO replication's fields (role, master_link_status, ...)."""
    text = str(_query(port, "INFO", "replication"))
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES."""

    port: int
    node_id: str
    role: str  # "master" or "replica"
    master_id: str | None  # the master a replica follows
    failed: bool


class _Server:
    """One redis-server process with its own directory; restartable on the same port and files."""

    def __init__(self, directory: Path, port: int, arguments: list[str]) -> None:
        self.directory = directory
        self.port = port
        self.arguments = arguments
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "server.log").open("ab")
        try:
            self.process = subprocess.Popen(
                self.arguments,
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def wait_ping(self, timeout: float = 10) -> None:
        def answers() -> bool | None:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited:\n{self.log()}")
            return True if _query(self.port, "PING") == "PONG" else None

        _wait(f"redis-server on {self.port} answering PING", answers, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        raise RuntimeError(f"{binary} is not installed (the Redis Cluster tests need it)")


class RedisClusterProcess:
    """A Redis Cluster of `masters` masters with `replicas` replicas each, on free ports.

    Each node has a client port and a cluster bus port of its own from the OS (`--cluster-port`):
    the default bus port (client port + 10000) may be taken, or past 65535, for a port the OS gives.
    """

    def __init__(
        self, workdir: str | Path, masters: int = 3, replicas: int = 1, appendonly: bool = True
    ) -> None:
        _require("redis-server")
        _require("redis-cli")
        self.workdir = Path(workdir)
        self.masters = masters
        self.replicas = replicas
        self.appendonly = appendonly
        self.start_seconds = 0.0
        self._killed_at: dict[int, float] = {}
        # The slots each killed master served, to know when another node serves them.
        self._killed_slots: dict[int, set[int]] = {}
        count = masters * (1 + replicas)
        ports = _free_ports(2 * count)
        self._servers: dict[int, _Server] = {}
        for port, bus in zip(ports[:count], ports[count:], strict=True):
            self._servers[port] = _Server(self.workdir / f"node-{port}", port, self._arguments(port, bus))
        self.ports = list(self._servers)
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _arguments(self, port: int, bus: int) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.appendonly
            else ["--appendonly", "no"]
        )
        return [
            "redis-server",
            "--port",
            str(port),
            "--cluster-port",
            str(bus),
            "--bind",
            "127.0.0.1",
            "--dir",
            ".",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--save",
            "",
            *_SYNC_AT_ONCE,
            *persistence,
        ]

    def _start(self) -> None:
        for server in self._servers.values():
            server.start()
        for server in self._servers.values():
            server.wait_ping()
        # redis-cli makes the first `masters` addresses the masters and the rest their replicas.
        create = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}")
        self.wait_ok(self.ports)
        _wait("every node agreeing on the masters and every replica in sync", self._settled, 30)

    def _settled(self) -> bool | None:
        """Every node sees the same masters and replicas (gossip carries each CLUSTER REPLICATE to
        the others a moment after slots are ok), and every replica has synced with its master: a
        master killed before then would have nothing to fail over to."""
        views = {
            port: [(node.port, node.role, node.failed) for node in self.nodes(port)] for port in self.ports
        }
        first = views[self.ports[0]]
        roles = [role for _, role, _ in first]
        if any(view != first for view in views.values()) or any(failed for _, _, failed in first):
            return None
        if roles.count("master") != self.masters or roles.count("replica") != self.masters * self.replicas:
            return None
        for port, role, _ in first:
            if role == "replica" and _replication(port).get("master_link_status") != "up":
                return None
        return True

    def wait_ok(self, ports: Iterable[int], timeout: float = 30) -> None:
        """Until every node in `ports` says cluster_state:ok with all 16384 slots assigned and ok."""
        ports = list(ports)

        def ok() -> bool | None:
            for port in ports:
                info = _cluster_info(port)
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    return None
            return True

        _wait(f"cluster_state:ok on {ports}", ok, timeout)

    @property
    def url(self) -> str:
        """The first master's address; a cluster client finds the other nodes from it (db 0 only)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _live_port(self) -> int:
        for port, server in self._servers.items():
            if server.alive():
                return port
        raise RuntimeError("no node of the cluster is running")

    def nodes(self, seen_from: int | None = None) -> list[ClusterNode]:
        """Every node as `seen_from` (else a live node) sees it (CLUSTER NODES), in the order the
        ports were given."""
        text = str(_query(seen_from or self._live_port(), "CLUSTER", "NODES"))
        by_port: dict[int, ClusterNode] = {}
        for line in text.splitlines():
            fields = line.split()
            node_id, address, flags, master = fields[0], fields[1], set(fields[2].split(",")), fields[3]
            port = int(address.split("@", 1)[0].rsplit(":", 1)[1])
            by_port[port] = ClusterNode(
                port=port,
                node_id=node_id,
                role="master" if "master" in flags else "replica",
                master_id=None if master == "-" else master,
                failed="fail" in flags or "fail?" in flags,
            )
        return [by_port[port] for port in self.ports if port in by_port]

    def slot_owners(self) -> dict[int, int]:
        """Each slot's master port, from CLUSTER SLOTS on a live node."""
        owners: dict[int, int] = {}
        slots = _query(self._live_port(), "CLUSTER", "SLOTS")
        for start, end, master, *_ in _slot_ranges(slots):
            for slot in range(start, end + 1):
                owners[slot] = master
        return owners

    def master_for_key(self, key: str) -> int:
        """The port of the master that holds `key` (CLUSTER KEYSLOT, then CLUSTER SLOTS)."""
        slot = int(str(_query(self._live_port(), "CLUSTER", "KEYSLOT", key)))
        return self.slot_owners()[slot]

    def replicas_of(self, port: int) -> list[int]:
        nodes = self.nodes()
        node_id = next(node.node_id for node in nodes if node.port == port)
        return [node.port for node in nodes if node.master_id == node_id]

    def kill(self, port: int) -> None:
        """SIGKILL one node: what a crash or an OOM kill does, with no chance to flush or hand over."""
        owned = {slot for slot, owner in self.slot_owners().items() if owner == port}
        self._killed_slots[port] = owned
        self._killed_at[port] = time.monotonic()
        self._servers[port].kill()

    def wait_failover(self, old_port: int, timeout: float = 30) -> float:
        """Until a former replica of the killed master `old_port` is master of its slots and every
        live node says cluster_state:ok; the seconds since the kill."""
        slots = self._killed_slots[old_port]
        live = [port for port, server in self._servers.items() if server.alive()]

        def taken_over() -> bool | None:
            owners = self.slot_owners()
            new = {owners.get(slot) for slot in slots}
            if len(new) != 1 or old_port in new or None in new:
                return None
            (port,) = new
            if port is None or not self._servers[port].alive():
                return None
            if _replication(port).get("role") != "master":
                return None
            return True

        _wait(f"a replica of {old_port} promoted", taken_over, timeout)
        self.wait_ok(live, timeout)
        return time.monotonic() - self._killed_at[old_port]

    def restart(self, port: int, timeout: float = 30) -> None:
        """Start a stopped or killed node again on its port and files: it rejoins (a failed-over
        master as a replica of the node that replaced it)."""
        server = self._servers[port]
        server.stop()
        server.start()
        server.wait_ping()
        self.wait_ok([port], timeout)

    def flush(self) -> None:
        """FLUSHALL on every master (a replica refuses writes and follows its master)."""
        for node in self.nodes():
            if node.role == "master" and not node.failed and self._servers[node.port].alive():
                _query(node.port, "FLUSHALL")

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()


def _slot_ranges(reply: list[list[Any]]) -> list[tuple[int, int, int]]:
    """(first slot, last slot, master port) from CLUSTER SLOTS: each entry is the range, then the
    master's [host, port, id], then its replicas'."""
    return [(int(entry[0]), int(entry[1]), int(entry[2][1])) for entry in reply]


class SentinelSetup:
    """One master, one replica (`--replicaof`) and three sentinels watching the master as `chat`.

    Quorum 2: two sentinels must agree the master is down (1 s without an answer) before the
    failover; a failover that stalls is retried after 5 s.
    """

    master_name = "chat"

    def __init__(self, workdir: str | Path) -> None:
        _require("redis-server")
        self.workdir = Path(workdir)
        master_port, replica_port, *sentinel_ports = _free_ports(5)
        self.master_port = master_port
        self.replica_port = replica_port
        self.sentinel_ports = sentinel_ports
        self._killed_at = 0.0
        self._killed_port = 0
        base = [
            "--bind",
            "127.0.0.1",
            "--dir",
            ".",
            "--save",
            "",
            *_SYNC_AT_ONCE,
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ]
        self._master = _Server(
            self.workdir / "master", master_port, ["redis-server", "--port", str(master_port), *base]
        )
        self._replica = _Server(
            self.workdir / "replica",
            replica_port,
            [
                "redis-server",
                "--port",
                str(replica_port),
                "--replicaof",
                "127.0.0.1",
                str(master_port),
                *base,
            ],
        )
        self._sentinels = [self._sentinel(port) for port in sentinel_ports]
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _sentinel(self, port: int) -> _Server:
        directory = self.workdir / f"sentinel-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        # A sentinel rewrites its configuration file as it learns the setup: it must be a file of its own.
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} 1000\n"
            f"sentinel failover-timeout {self.master_name} 5000\n"
        )
        # redis-sentinel is redis-server in sentinel mode; Debian's redis-server package has no
        # redis-sentinel link.
        return _Server(directory, port, ["redis-server", str(config), "--sentinel"])

    def _start(self) -> None:
        self._master.start()
        self._master.wait_ping()
        self._replica.start()
        self._replica.wait_ping()
        _wait(
            "the replica in sync with the master",
            lambda: True if _replication(self.replica_port).get("master_link_status") == "up" else None,
            30,
        )
        for sentinel in self._sentinels:
            sentinel.start()
        for sentinel in self._sentinels:
            sentinel.wait_ping()

        def all_know() -> bool | None:
            # Every sentinel must know the replica and the other two sentinels, or it cannot vote
            # for or carry out a failover.
            for port in self.sentinel_ports:
                reply = _query(port, "SENTINEL", "MASTER", self.master_name)
                fields = dict(zip(reply[::2], reply[1::2], strict=True))
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                    return None
            return True

        _wait("every sentinel knowing the replica and the other sentinels", all_know, 30, interval=0.1)

    @property
    def sentinel_url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/0"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinels' addresses, as `redis.sentinel.Sentinel` takes them."""
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    def master_address(self, sentinel_port: int | None = None) -> tuple[str, int]:
        port = sentinel_port or self.sentinel_ports[0]
        host, master_port = _query(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return str(host), int(master_port)

    def _server(self, port: int) -> _Server:
        return self._master if port == self.master_port else self._replica

    def kill_master(self) -> int:
        """SIGKILL the current master; its port."""
        _, port = self.master_address()
        self._killed_port = port
        self._killed_at = time.monotonic()
        self._server(port).kill()
        return port

    def wait_failover(self, timeout: float = 30) -> float:
        """Until every sentinel names another master and that one says it is master; the seconds
        since the kill."""

        def moved() -> bool | None:
            addresses = {self.master_address(port) for port in self.sentinel_ports}
            if len(addresses) != 1:
                return None
            ((_, port),) = addresses
            if port == self._killed_port:
                return None
            return True if _replication(port).get("role") == "master" else None

        _wait("the sentinels naming a new master", moved, timeout, interval=0.1)
        return time.monotonic() - self._killed_at

    def restart_killed(self) -> None:
        """Start the killed master again: the sentinels turn it into a replica of the new master
        (as an orchestrator restarting the dead server would)."""
        server = self._server(self._killed_port)
        server.start()
        server.wait_ping()

        def replicating() -> bool | None:
            return True if _replication(self._killed_port).get("master_link_status") == "up" else None

        _wait("the old master replicating the new one", replicating, 30, interval=0.1)

    def stop(self) -> None:
        for server in [*self._sentinels, self._replica, self._master]:
            server.stop()
