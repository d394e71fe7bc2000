"""The Procfile's real processes on free ports, against real Postgres and Redis, and a REST client."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import services

ROOT = Path(__file__).resolve().parents[2]
# The processes' own Redis database, on the run's own server (services.REDIS_URL). A cluster has
# only db 0, which the processes then share with the in-process tests (make e2e runs serially).
E2E_REDIS_URL = os.environ.get(
    "TEST_E2E_REDIS_URL",
    services.REDIS_URL if services.REDIS_MODE == "cluster" else services.REDIS_URL.rsplit("/", 1)[0] + "/13",
)
SECRET = "e2e-secret-" + "k" * 40


def with_redis_mode(env: dict[str, str]) -> dict[str, str]:
    """`env` with the REDIS_MODE its REDIS_URL needs, unless it names one: REDIS_MODE=cluster for the
    run's cluster (TEST_REDIS_MODE=cluster), standalone for a test's own server."""
    if "REDIS_MODE" in env or "REDIS_URL" not in env:
        return env
    return {**env, "REDIS_MODE": services.redis_mode_for(env["REDIS_URL"])}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports_at(offsets: Iterable[int]) -> int:
    """A free port the OS gives (bind port 0) whose ports at `offsets` above it are free too: the
    first port of a process manager (honcho) that puts its processes at fixed steps from it."""
    wanted = sorted({0, *offsets})
    for _ in range(50):
        first = free_port()
        if first + wanted[-1] > 65535:
            continue
        with contextlib.ExitStack() as held:
            try:
                for offset in wanted:
                    held.enter_context(socket.socket()).bind(("0.0.0.0", first + offset))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no free ports at {wanted} above any port the OS offered")


class Process:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name = name
        self.popen = popen
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10) -> int | None:
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Stack:
    """The product's processes, started from the Procfile's own lines."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.processes: list[Process] = []
        self.lines = procfile()

    def start(self, kind: str, *, wait: bool = True, **extra_env: str) -> Process:
        port = free_port()
        env = with_redis_mode({**os.environ, **self.env, "PORT": str(port), **extra_env})
        log = self.logs / f"{kind}-{port}.log"
        command = self.lines[kind].strip()
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                cwd=ROOT,
                env={**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(kind, popen, port, log)
        self.processes.append(process)
        if wait:
            self.wait_ready(process)
        return process

    def run(self, kind: str, **extra_env: str) -> subprocess.CompletedProcess[bytes]:
        env = with_redis_mode(
            {
                **os.environ,
                **self.env,
                **extra_env,
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            }
        )
        return subprocess.run(
            ["/bin/sh", "-c", self.lines[kind].strip()], cwd=ROOT, env=env, capture_output=True, timeout=120
        )

    def wait_ready(self, process: Process, timeout: float = 30) -> None:
        # The worker answers /metrics on $PORT; web and push answer /healthz.
        path = "/metrics" if process.name == "worker" else "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.output()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(process.url + path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{process.name} did not become ready:\n{process.output()}")

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def stack_env(database_url: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "production",
        "DATABASE_URL": database_url,
        "REDIS_URL": E2E_REDIS_URL,
        "SECRET_KEY": SECRET,
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        # Tests register many users from one address and send in bursts (see tests/conftest.py).
        "RATE_LIMIT_REGISTER_PER_ADDRESS": "off",
        "RATE_LIMIT_LOGIN_PER_ADDRESS": "off",
        "RATE_LIMIT_SENDS_PER_USER": "off",
        "LOG_LEVEL": "WARNING",
    }


@dataclass(frozen=True)
class DevServer:
    """`python -m devserver` running: its api and push base URLs, and its output."""

    api: str  # http://127.0.0.1:PORT
    push: str  # ws://127.0.0.1:PORT
    log: Path


@contextlib.contextmanager
def dev_server(home: Path, env: Mapping[str, str] | None = None) -> Iterator[DevServer]:
    """Dev mode (`python -m devserver`) in `home` on free ports, once it prints its push URL.

    The caller's DATABASE_URL, REDIS_URL, SECRET_KEY and ENVIRONMENT are left out, as on a machine
    with nothing configured; `env` is added. Afterwards it gets SIGTERM and must exit with 0.
    """
    api_port, push_port = free_port(), free_port()
    unset = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ENVIRONMENT"}
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    environ |= {"API_PORT": str(api_port), "PUSH_PORT": str(push_port), **(env or {})}
    log = home / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devserver"],
            cwd=home,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while f"ws://127.0.0.1:{push_port}/ws" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield DevServer(f"http://127.0.0.1:{api_port}", f"ws://127.0.0.1:{push_port}", log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()


class Client:
    """A REST client as an application would write one."""

    def __init__(self, base: str) -> None:
        self.http = httpx.AsyncClient(base_url=base + "/api/v1", timeout=10)

    async def user(self, username: str | None = None, password: str = "correct horse") -> dict[str, Any]:
        import uuid

        name = username or f"e{uuid.uuid4().hex[:10]}"
        registered = await self.http.post("/auth/register", json={"username": name, "password": password})
        assert registered.status_code == 201, registered.text
        login = await self.http.post("/auth/login", json={"username": name, "password": password})
        assert login.status_code == 200, login.text
        user: dict[str, Any] = registered.json() | login.json()
        user["headers"] = {"Authorization": f"Bearer {user['access_token']}"}
        return user

    async def aclose(self) -> None:
        await self.http.aclose()
