"""Prometheus metrics every process exposes at `/metrics`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector

HTTP_REQUESTS = Counter("chat_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "chat_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MESSAGES_ACCEPTED = Counter("chat_messages_accepted_total", "Message writes accepted and queued by the api")
# Worker metrics, named as the arq exporters operators already run name them: the conventional
# arq_* counters and histograms, plus the five gauges of kpn/arq-prometheus for existing dashboards.
_JOB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOBS = Counter("arq_jobs", "Jobs finished by this worker, by function and outcome", ["function", "outcome"])
JOB_DURATION = Histogram(
    "arq_job_duration_seconds", "Time a job ran, from start to outcome", ["function"], buckets=_JOB_BUCKETS
)
JOB_QUEUED_SECONDS = Histogram(
    "arq_job_queued_seconds",
    "Time a job waited in the queue past its due time",
    ["function"],
    buckets=_JOB_BUCKETS,
)
QUEUE_JOBS = Gauge("arq_queue_jobs", "Jobs in the queue by state", ["queue", "state"])
DEAD_LETTERS = Gauge("arq_dead_letters", "Jobs that failed for good and wait for an operator", ["queue"])
WORKERS = Gauge("arq_workers", "Live workers (heartbeat not expired)", ["queue"])
QUEUE_OLDEST_AGE = Gauge(
    "arq_queue_oldest_job_age_seconds",
    "How long the oldest job ready to run has waited past its due time (0: none waits)",
    ["queue"],
)
ARQ_COMPLETED = Gauge("arq_jobs_completed", "The number of jobs completed by this worker.")
ARQ_FAILED = Gauge("arq_jobs_failed", "The total number of errored jobs of this worker.")
ARQ_RETRIED = Gauge("arq_jobs_retried", "The total number of retried jobs of this worker.")
ARQ_ONGOING = Gauge("arq_ongoing_jobs", "The number of jobs in progress on this worker.")
ARQ_QUEUED = Gauge("arq_queued_inprogress", "The number of jobs queued (name kept from arq-prometheus).")
EVENTS_PUBLISHED = Counter("chat_events_published_total", "Events appended to user streams", ["type"])
WEBHOOKS_DISPATCHED = Counter(
    "chat_webhooks_dispatched_total", "Webhook deliveries enqueued, by event type", ["type"]
)
# delivered; retried (a failed attempt with tries left); failed (the last try failed: dead letter);
# dropped (the webhook was deleted before the attempt).
WEBHOOK_DELIVERIES = Counter(
    "chat_webhook_deliveries_total", "Webhook delivery attempts, by outcome", ["outcome"]
)
WEBHOOK_SECONDS = Histogram(
    "chat_webhook_request_seconds",
    "Time a webhook receiver took to answer (or to time out)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WS_CONNECTIONS = Gauge("chat_ws_connections", "Open WebSocket connections on this push process")
WS_FRAMES_SENT = Counter("chat_ws_frames_sent_total", "Frames sent to WebSocket clients")
WS_CLOSED = Counter("chat_ws_closed_total", "WebSocket connections closed, by close code", ["code"])
# From the api accepting a message (its created_at, the api's clock) to its frame handed to this
# push process's sockets: queue wait, store, publish and fan-out, the latency a user sees.
DELIVERY_SECONDS = Histogram(
    "chat_message_delivery_seconds",
    "From a message's POST to its frame offered to the sockets of this push process",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# 1 while the dependency answers this process's readiness check, 0 while it does not; checked
# on each /readyz and each scrape of /metrics (chat.infra.probes).
DEPENDENCY_UP = Gauge(
    "chat_dependency_up", "Whether a dependency answers this process's readiness check", ["dependency"]
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def only(*collectors: Collector) -> CollectorRegistry:
    """A registry of these metrics and the process's own (CPU, memory, GC, Python), nothing else.

    Every metric is defined in this one module, so every process has them all in REGISTRY; a
    process serves only those it moves, or a scrape shows series that stay at zero forever.
    """
    registry = CollectorRegistry()
    for collector in (*collectors, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


# What a worker moves (jobs, queues, events, webhooks): its metrics port serves these.
WORKER_METRICS = only(
    JOBS,
    JOB_DURATION,
    JOB_QUEUED_SECONDS,
    QUEUE_JOBS,
    DEAD_LETTERS,
    WORKERS,
    QUEUE_OLDEST_AGE,
    ARQ_COMPLETED,
    ARQ_FAILED,
    ARQ_RETRIED,
    ARQ_ONGOING,
    ARQ_QUEUED,
    EVENTS_PUBLISHED,
    WEBHOOKS_DISPATCHED,
    WEBHOOK_DELIVERIES,
    WEBHOOK_SECONDS,
)


_CREATED_AT = re.compile(r'"created_at":"([^"]+)"')


def observe_delivery(frame: str) -> None:
    """Time a message.created frame from its POST. Only that event's head is looked at, and its
    first created_at is the message's own: a body's quotes are escaped and cannot match."""
    if '"type":"message.created"' not in frame[:96]:
        return
    found = _CREATED_AT.search(frame)
    if found is None:
        return
    try:
        created = datetime.fromisoformat(found[1])
    except ValueError:
        return
    DELIVERY_SECONDS.observe(max(0.0, (datetime.now(UTC) - created).total_seconds()))


def render() -> bytes:
    return generate_latest(REGISTRY)
