"""The worker's metrics port serves chat.infra.metrics.WORKER_METRICS: every metric the worker's code moves,
and none that only the api or the push process moves (a new metric must land on the right side)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from chat.infra import metrics

ROOT = Path(__file__).resolve().parents[1]
USE = re.compile(r"\bmetrics\.([A-Z][A-Z0-9_]*)\b")


# The use cases are what the api (and the server API) run: chat/ but never the worker's code.
API_SIDE = ROOT / "chat" / "usecases"


def moved_in(*folders: str, skip: Path | None = None) -> set[str]:
    """Names of the chat.infra.metrics metrics that code under `folders` (less `skip`) moves."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if skip is not None and path.is_relative_to(skip):
                continue
            if path.name not in {"metrics.py", "probes.py"}:
                found |= set(USE.findall(path.read_text()))
    return {name for name in found if isinstance(getattr(metrics, name, None), MetricWrapperBase)}


def served_by_worker() -> set[str]:
    served = {family.name for family in metrics.WORKER_METRICS.collect()}
    return {
        name
        for name, value in vars(metrics).items()
        if isinstance(value, MetricWrapperBase) and value._name in served
    }


def test_the_worker_serves_what_it_moves_and_nothing_else() -> None:
    # The worker runs workers/ and the shared chat/ modules (chat.domain.webhooks dispatches for both),
    # but not the use cases, which are the api's.
    worker = moved_in("workers", "chat", skip=API_SIDE)
    others = (moved_in("api", "push") | moved_in("chat/usecases")) - worker
    assert worker and others
    assert worker - served_by_worker() == set(), "add these to chat.infra.metrics.WORKER_METRICS"
    assert served_by_worker() & others == set(), "the worker never moves these"
