"""A real Prometheus (Debian's package) scraping the real web, worker and push processes with
deploy/prometheus/alerts.yml loaded (its `for:` shortened): stopping the worker fires
HeadlessChatNoLiveWorker, jobs failing for good fire HeadlessChatDeadLettersGrowing. The processes
run with LOG_FORMAT=json, and every line they write parses as one JSON object."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml
from redis.asyncio import Redis

from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.keys import DEFAULT_QUEUE
from tests.support import services
from tests.support.stack import E2E_REDIS_URL, ROOT, Process, Stack, free_port

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("prometheus is not installed (apt-get install prometheus); CI runs this")
    return found


def short_rules(target: Path) -> None:
    """alerts.yml as shipped, except that every alert fires after 1 s instead of minutes."""
    target.write_text(re.sub(r"(?m)^(\s+for:) \S+$", r"\1 1s", RULES.read_text()))


@dataclass
class Prometheus:
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: str) -> Any:
        answer = httpx.get(self.url + path, params=params, timeout=5)
        answer.raise_for_status()
        return answer.json()["data"]

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """Firing alerts by name, each its labels."""
        found: dict[str, list[dict[str, str]]] = {}
        for alert in self.get("/api/v1/alerts")["alerts"]:
            if alert["state"] == "firing":
                found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return found

    def wait_firing(self, name: str, timeout: float = 60) -> tuple[list[dict[str, str]], float]:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            firing = self.firing()
            if name in firing:
                return firing[name], time.monotonic() - started
            time.sleep(0.25)
        raise AssertionError(f"{name} did not fire in {timeout} s: {self.get('/api/v1/alerts')}")

    def wait_resolved(self, name: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while name in self.firing():
            assert time.monotonic() < deadline, f"{name} still fires: {self.get('/api/v1/alerts')}"
            time.sleep(0.25)

    def wait_series(self, query: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result: list[dict[str, Any]] = self.get("/api/v1/query", query=query)["result"]
            if result:
                return result
            time.sleep(0.25)
        raise AssertionError(f"no series for {query} in {timeout} s:\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def processes(stack: Stack) -> dict[str, Process]:
    return {
        "web": stack.start("web", LOG_FORMAT="json", LOG_LEVEL="INFO"),
        # Heartbeats (and so the queue gauges) every half second, a dead worker's record gone in 2 s.
        "worker": stack.start(
            "worker",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            WORKER_HEARTBEAT_SECONDS="0.5",
            WORKER_HEARTBEAT_TTL_SECONDS="2",
        ),
        "push": stack.start("push", LOG_FORMAT="json", LOG_LEVEL="INFO"),
    }


@pytest.fixture(scope="module")
def prometheus(
    processes: dict[str, Process], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    home = tmp_path_factory.mktemp("prometheus")
    short_rules(home / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": kind, "static_configs": [{"targets": [f"127.0.0.1:{process.port}"]}]}
            for kind, process in processes.items()
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = home / "prometheus.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [
                binary,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", popen, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert popen.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(server.url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield server
    finally:
        popen.terminate()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)


def test_every_process_writes_json_lines(processes: dict[str, Process], prometheus: Prometheus) -> None:
    # By now each has started and answered scrapes.
    prometheus.wait_series('up{job="worker"} == 1')
    for kind, process in processes.items():
        lines = [json.loads(line) for line in process.output().splitlines() if line.strip()]
        assert lines, f"{kind} wrote nothing"
        assert {line["process"] for line in lines} == {kind}, process.output()
        assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)


def test_the_processes_are_scraped_with_their_dependencies_up(prometheus: Prometheus) -> None:
    up = prometheus.wait_series('count(up{job=~"web|worker|push"} == 1) == 3')
    assert up, prometheus.get("/api/v1/targets")
    dependencies = prometheus.wait_series("chat_dependency_up == 1")
    seen = {(s["metric"]["job"], s["metric"]["dependency"]) for s in dependencies}
    assert seen >= {("web", "database"), ("web", "redis"), ("push", "redis")}
    assert "HeadlessChatDependencyDown" not in prometheus.firing()
    # Before the first scrapes (and the worker's first heartbeat) arq_workers was absent, which a 1 s
    # `for:` lets fire; it resolves at the first evaluation that sees the worker.
    prometheus.wait_series("arq_workers >= 1")
    prometheus.wait_resolved("HeadlessChatNoLiveWorker")


async def test_dead_letters_growing_fires(prometheus: Prometheus) -> None:
    # The count before, in Prometheus, so that the rise is growth over the window.
    before = prometheus.wait_series("arq_dead_letters")
    assert "HeadlessChatDeadLettersGrowing" not in prometheus.firing()
    count = max(float(series["value"][1]) for series in before)
    redis = services.async_redis_client(E2E_REDIS_URL)
    try:
        writer = QueueWriter(cast(Redis, redis), DEFAULT_QUEUE)
        for n in range(3):  # no worker knows the function: each is a dead letter at its first try
            await writer.enqueue("no_such_function", [{}], f"prometheus-e2e:{n}")
    finally:
        await redis.aclose()
    alerts, seconds = prometheus.wait_firing("HeadlessChatDeadLettersGrowing")
    print(f"HeadlessChatDeadLettersGrowing fired {seconds:.1f} s after the jobs were enqueued")
    assert [alert["queue"] for alert in alerts] == [DEFAULT_QUEUE]
    grown = prometheus.get("/api/v1/query", query="max(arq_dead_letters)")["result"]
    assert float(grown[0]["value"][1]) == count + 3


def test_no_live_worker_fires_once_the_worker_stops(
    processes: dict[str, Process], prometheus: Prometheus
) -> None:
    prometheus.wait_series("arq_workers >= 1")
    prometheus.wait_resolved("HeadlessChatNoLiveWorker")
    assert processes["worker"].stop() == 0
    _, seconds = prometheus.wait_firing("HeadlessChatNoLiveWorker")
    print(f"HeadlessChatNoLiveWorker fired {seconds:.1f} s after the worker stopped")
