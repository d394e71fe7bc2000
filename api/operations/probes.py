"""The operator's endpoints, at the root and under the api's prefix: no token, and they must answer
even when a dependency does not."""

from __future__ import annotations

from api import representations as r
from api.operations.base import PREFIX, unguarded
from chat.infra import probes

BOTH = ("", PREFIX)

OPERATIONS = (
    unguarded("/healthz", probes.Liveness, "Liveness", ("The process runs.", r.Health), roots=BOTH),
    unguarded(
        "/readyz",
        probes.Readiness,
        "Readiness: Postgres and Redis answer",
        ("Ready.", r.Readiness),
        errors={503: "A dependency does not answer; `checks` says which."},
        roots=BOTH,
    ),
    unguarded(
        "/metrics",
        probes.Metrics,
        "Prometheus metrics",
        ("Prometheus text exposition format.", None),
        media="text/plain",
        roots=BOTH,
    ),
)
