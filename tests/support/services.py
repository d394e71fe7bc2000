"""Real Postgres and Redis for the tests: a fresh database per run, failing (not skipping) under CI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis
import redis.asyncio

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# The Redis topology the run tests against: one server, or a Redis Cluster of three masters with a
# replica each (`make e2e-cluster`). The processes the run starts inherit the variable.
REDIS_MODE = os.environ.get("TEST_REDIS_MODE", "standalone")
if REDIS_MODE not in {"standalone", "cluster"}:
    raise RuntimeError(f"TEST_REDIS_MODE={REDIS_MODE!r}: standalone or cluster")


def _run_redis() -> str:
    """A redis-server of this test run's own, on a port from the OS, gone when the run ends.

    The tests flush their databases before each test: on a shared server two runs on one machine
    would flush each other's. `TEST_REDIS_URL` names another server instead; the child processes a
    run starts inherit the variable, so they use the same server as the run.
    """
    import atexit
    import ctypes
    import shutil
    import socket

    if shutil.which("redis-server") is None:
        return "redis://127.0.0.1:6379/14"  # check_redis() then fails (CI) or skips, naming it
    if REDIS_MODE == "cluster":
        return _run_cluster()

    def die_with_parent() -> None:
        # PR_SET_PDEATHSIG: a run killed with SIGKILL leaves no server behind.
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )

    def stop() -> None:
        server.terminate()
        server.wait(10)

    atexit.register(stop)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        for _ in range(200):
            with contextlib.suppress(redis.exceptions.RedisError):
                if client.ping():
                    break
            time.sleep(0.025)
    finally:
        client.close()
    url = f"redis://127.0.0.1:{port}/14"
    os.environ["TEST_REDIS_URL"] = url
    os.environ["TEST_REDIS_STARTED_BY"] = os.environ.get("PYTEST_XDIST_WORKER", "")
    return url


def _run_cluster() -> str:
    """A Redis Cluster of this test run's own (tests/support/rediscluster.py), gone when the run ends.

    Its URL names one master's db 0: a cluster has no other database.
    """
    import atexit
    import shutil
    import tempfile

    from tests.support.rediscluster import RedisClusterProcess

    workdir = tempfile.mkdtemp(prefix="test-redis-cluster-")
    cluster = RedisClusterProcess(workdir)

    def stop() -> None:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    atexit.register(stop)
    os.environ["TEST_REDIS_URL"] = cluster.url
    os.environ["TEST_REDIS_STARTED_BY"] = os.environ.get("PYTEST_XDIST_WORKER", "")
    os.environ["TEST_REDIS_MODE"] = "cluster"
    return cluster.url


def _redis_url() -> str:
    """The run's Redis: the one `TEST_REDIS_URL` names, else a server of its own.

    pytest-xdist's workers inherit the variable from the process that started them; a server the
    tests started (not one a person named) is not shared between workers, which flush it.
    """
    given = os.environ.get("TEST_REDIS_URL")
    started_by = os.environ.get("TEST_REDIS_STARTED_BY")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if given and (started_by is None or started_by == worker):
        return given
    return _run_redis()


REDIS_URL = _redis_url()


def unavailable(what: str, error: BaseException) -> None:
    message = f"{what} is not reachable ({error}); start it (see README: Running the tests)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def database_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    parts = urlsplit(POSTGRES_ADMIN_URL)
    return urlunsplit((driver, parts.netloc, f"/{name}", "", ""))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(*, durable: bool = False) -> str:
    """Create an empty database of its own for this test run; returns its name.

    `durable`: commits wait for the disk as in production (the benchmark measures that).
    """
    name = f"chat_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        if not durable:
            # A test database need not survive a crash of the machine: commits skip waiting for
            # the disk, which is most of the time a test spends in Postgres. (Its own only.)
            asyncio.run(_admin(f'ALTER DATABASE "{name}" SET synchronous_commit TO off'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", exc)
    return name


def drop_database(name: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def redis_mode_for(url: str) -> str:
    """The REDIS_MODE a process or Settings needs for `url`: the run's mode on the run's Redis, and
    standalone on any other (a PrivateRedis a fault test breaks is one server in every mode)."""
    return REDIS_MODE if urlsplit(url).netloc == urlsplit(REDIS_URL).netloc else "standalone"


def redis_client(url: str | None = None, **options: Any) -> redis.Redis | redis.RedisCluster:
    """A client of the run's Redis (or of `url` on it): a cluster client under TEST_REDIS_MODE=cluster,
    which follows each key to its master, else a plain one."""
    url = url or REDIS_URL
    client: redis.Redis | redis.RedisCluster
    if REDIS_MODE == "cluster":
        client = redis.RedisCluster.from_url(url, **options)
    else:
        client = redis.Redis.from_url(url, **options)
    return client


def async_redis_client(
    url: str | None = None, **options: Any
) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """The asyncio client of `redis_client`'s kind."""
    url = url or REDIS_URL
    client: redis.asyncio.Redis | redis.asyncio.RedisCluster
    if REDIS_MODE == "cluster":
        client = redis.asyncio.RedisCluster.from_url(url, **options)
    else:
        client = redis.asyncio.Redis.from_url(url, **options)
    return client


def check_redis() -> None:
    # Connecting a cluster client reads the cluster's slots from the node: a Redis without cluster
    # mode, or a cluster not yet ok, fails here rather than in the first test.
    try:
        client = redis_client(socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        unavailable(f"Redis ({REDIS_MODE}) at {REDIS_URL}", exc)


def flush_redis(url: str | None = None) -> None:
    """Empty the run's Redis database (or `url`'s): FLUSHDB on one server; on a cluster, FLUSHALL
    on every master (a cluster has only db 0)."""
    client = redis_client(url)
    try:
        if isinstance(client, redis.RedisCluster):
            client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
        else:
            client.flushdb()
    finally:
        client.close()


class PrivateRedis:
    """A redis-server of the test's own on a free port, with AOF on, that a fault test may restart.

    The shared server on 6379 is never stopped; this one is the test's to break.
    """

    def __init__(self, workdir: str, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.workdir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            for _ in range(100):
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
            raise RuntimeError(f"redis-server on {self.port} did not start")
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown: the AOF is flushed, so nothing acknowledged is lost."""
        if self._process is None:
            return
        self._process.terminate()
        self._process.wait(10)
        self._process = None


def private_redis(workdir: str) -> PrivateRedis:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = PrivateRedis(workdir, port)
    server.start()
    return server


def _postgres_bin(name: str) -> str:
    """A PostgreSQL server binary (initdb, pg_ctl), newest installed major version first."""
    import glob

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError(f"no {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own on a free port, that a fault test may stop and start.

    The shared server on 5432 is never stopped; this one is the test's to break. initdb refuses to
    run as root, so when the tests run as root the cluster is made and run by the `postgres` user in
    a directory it owns.
    """

    DATABASE = "chat"

    def __init__(self, workdir: str, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.data = os.path.join(workdir, "data")
        self.log = os.path.join(workdir, "postgres.log")
        self.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        # The asyncpg URL the processes and `migrate` take.
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{self.DATABASE}"
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/{self.DATABASE}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stdout}{result.stderr}")

    def init(self) -> None:
        """initdb, start, and create the (empty) database `url` points at."""
        if os.geteuid() == 0:
            import shutil

            shutil.chown(self.workdir, "postgres", "postgres")
        self._run(
            _postgres_bin("initdb"),
            "-D",
            self.data,
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=5)
            try:
                await conn.execute(f'CREATE DATABASE "{self.DATABASE}"')
            finally:
                await conn.close()

        asyncio.run(create())

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._run(
            _postgres_bin("pg_ctl"), "-D", self.data, "-o", options, "-l", self.log, "-w", "-t", "30", "start"
        )

    def stop(self) -> None:
        """A fast shutdown: sessions are cut off, committed work is kept."""
        self._run(_postgres_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def destroy(self) -> None:
        import shutil

        if self.running():
            with contextlib.suppress(RuntimeError):
                self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def private_postgres() -> PrivatePostgres:
    """A new cluster with an empty database, in a temporary directory of its own; `destroy()` it."""
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = PrivatePostgres(tempfile.mkdtemp(prefix="private-pg-"), port)
    try:
        server.init()
    except BaseException:
        server.destroy()
        raise
    return server
