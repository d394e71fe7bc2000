"""The operator's endpoints, at the root and under the api's prefix: no token, and they must answer
even when a dependency does not."""

from __future__ import annotations

from typing import Any

from api import representations as r
from api.operations.base import PREFIX, Operation, Reply
from chat import probes


def _probe(path: str, resource: type[Any], summary: str, ok: Reply, **more: Any) -> Operation:
    return Operation(
        "GET",
        path,
        resource,
        "operations",
        summary,
        "public",
        {200: ok},
        dependencies=False,
        roots=("", PREFIX),
        **more,
    )


OPERATIONS = (
    _probe("/healthz", probes.Liveness, "Liveness", ("The process runs.", r.Health)),
    _probe(
        "/readyz",
        probes.Readiness,
        "Readiness: Postgres and Redis answer",
        ("Ready.", r.Readiness),
        errors={503: "A dependency does not answer; `checks` says which."},
    ),
    _probe(
        "/metrics",
        probes.Metrics,
        "Prometheus metrics",
        ("Prometheus text exposition format.", None),
        media="text/plain",
    ),
)
