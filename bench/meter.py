"""What a scenario costs: CPU seconds and peak memory of each process, and latency percentiles.

The product's processes are counted one by one; Postgres and Redis are counted apart (all of the
cluster's processes, all of redis-server's), since they are shared by every process type and are
what a deployment would move to other machines first.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def services(redis_port: int) -> dict[str, list[psutil.Process]]:
    """Postgres (every process of the cluster) and the redis-server on `redis_port`."""
    found: dict[str, list[psutil.Process]] = {"postgres": [], "redis": []}
    for process in psutil.process_iter(["name", "cmdline"]):
        name = process.info["name"] or ""
        if name.startswith("postgres"):
            found["postgres"].append(process)
        elif name.startswith("redis-server") and f":{redis_port}" in " ".join(process.info["cmdline"] or []):
            found["redis"].append(process)
    return found


@dataclass
class Meter:
    """CPU and RSS of named groups of processes; `products` are fixed, `redis_port` names Redis."""

    products: Mapping[str, int]  # name -> pid
    redis_port: int
    peaks: dict[str, float] = field(default_factory=dict)

    def groups(self) -> dict[str, list[psutil.Process]]:
        groups = {name: [psutil.Process(pid)] for name, pid in self.products.items()}
        # The bench's own clients share the machine: their CPU says when they, not the product,
        # are what a scenario measures.
        return groups | services(self.redis_port) | {"bench client": [psutil.Process(os.getpid())]}

    def cpu(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far, per pid, per group: a process that starts later counts from zero."""
        totals: dict[str, dict[int, float]] = {}
        for name, processes in self.groups().items():
            totals[name] = {}
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    totals[name][process.pid] = _cpu(process)
        return totals

    def rss_mb(self) -> dict[str, float]:
        sizes: dict[str, float] = {}
        for name, pid in self.products.items():
            with contextlib.suppress(psutil.Error):
                sizes[name] = psutil.Process(pid).memory_info().rss / MB
        return sizes

    @contextlib.contextmanager
    def window(self) -> Iterator[Window]:
        """CPU used between entering and leaving, and the peak RSS of each product process."""
        window = Window(self, self.cpu())
        sampler = asyncio.get_running_loop().create_task(window.sample())
        try:
            yield window
        finally:
            sampler.cancel()
            window.close(self.cpu())


@dataclass
class Window:
    meter: Meter
    before: dict[str, dict[int, float]]
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    async def sample(self, every: float = 0.5) -> None:
        while True:
            for name, size in self.meter.rss_mb().items():
                self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0.0), size)
            await asyncio.sleep(every)

    def close(self, after: dict[str, dict[int, float]]) -> None:
        for name, pids in after.items():
            start = self.before.get(name, {})
            self.cpu_s[name] = sum(max(0.0, used - start.get(pid, 0.0)) for pid, used in pids.items())
        for name, size in self.meter.rss_mb().items():
            self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0.0), size)

    def per_unit_ms(self, units: int) -> dict[str, float]:
        """CPU milliseconds per message (or frame) for each group, and the product's total."""
        if units <= 0:
            return {}
        result = {name: used * 1000 / units for name, used in self.cpu_s.items()}
        result["server"] = sum(result[name] for name in self.meter.products)
        return result


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms, default=math.nan)}
