"""Prometheus metrics every process exposes at `/metrics`."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter("chat_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "chat_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
MESSAGES_ACCEPTED = Counter("chat_messages_accepted_total", "Message writes accepted and queued by the api")
JOBS_FINISHED = Counter("chat_jobs_total", "Jobs finished by workers", ["function", "outcome"])
JOB_SECONDS = Histogram(
    "chat_job_seconds",
    "Time a worker spent on one job",
    ["function"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
EVENTS_PUBLISHED = Counter("chat_events_published_total", "Events appended to user streams", ["type"])
WS_CONNECTIONS = Gauge("chat_ws_connections", "Open WebSocket connections on this push process")
WS_FRAMES_SENT = Counter("chat_ws_frames_sent_total", "Frames sent to WebSocket clients")
WS_CLOSED = Counter("chat_ws_closed_total", "WebSocket connections closed, by close code", ["code"])

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render() -> bytes:
    return generate_latest(REGISTRY)
