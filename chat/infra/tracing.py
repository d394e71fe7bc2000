"""OpenTelemetry traces: one trace per message, from the api's POST through the job and the worker
to the push process's delivery.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then
spans go out over OTLP/HTTP (protobuf), configured by the standard OTEL_* variables (the sampler by
OTEL_TRACES_SAMPLER, the batch by OTEL_BSP_*). Off, nothing of OpenTelemetry is imported and every
hook below costs one check of a module global: the hot paths run as if this module did not exist.

The context travels as a W3C traceparent (`00-<trace id>-<span id>-<flags>`):
- the api's request span (api/observe.py) holds an "enqueue" span around the send script, whose
  traceparent the job body carries (`"tp"`, chat/jobqueue/codec.py);
- the worker's job span is that span's child (workers/runtime/run.py), with "store" (the group
  commit) and "publish" (the finishing transaction) under it;
- the event carries the publish span's traceparent through Redis (chat/realtime/events.py); push
  strips it from the frame and records "deliver" under it (push/hub.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("chat.tracing")

T = TypeVar("T")

# Set by setup() once, when tracing is on; None means every hook returns at once.
_tracer: Tracer | None = None
_OFF: AbstractContextManager[None] = contextlib.nullcontext()
# Milliseconds (the job body's clock) to OpenTelemetry's nanoseconds.
_NS = 1_000_000


def endpoint_set(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and the SDK not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup(process: str) -> bool:
    """Turn tracing on for this process if the environment asks for it; True when it is on.

    `process` is the Procfile's process type: the service is `headless-chat-<process>` unless
    OTEL_SERVICE_NAME says otherwise. The first call decides (the dev server runs all three
    processes in one, and traces as `web`).
    """
    global _tracer
    if _tracer is not None:
        return True
    if not endpoint_set():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        # A missing optional extra must not stop a process that would otherwise serve.
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but %s is not installed "
            "(pip install 'headless-chat[tracing]'); tracing stays off",
            exc.name,
        )
        return False
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; attributes given
    # here would override them, so the default name is given only when the variable is unset.
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"headless-chat-{process}"}
    provider = TracerProvider(resource=Resource.create(named))
    # Batched in a thread of the SDK's: a span costs the request an append, never an export.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Global, so that log lines (LOG_FORMAT=json) can read the current span's ids.
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("headless-chat")
    log.info("tracing on: spans go to %s", _endpoint())
    return True


def _endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"
    )


def enabled() -> bool:
    return _tracer is not None


def _on() -> Tracer:
    if _tracer is None:
        raise RuntimeError("tracing is off: chat.infra.tracing.setup() turns it on")
    return _tracer


def span(name: str, *, producer: bool = False) -> AbstractContextManager[Any]:
    """A span under the current one, current itself inside the `with`; nothing when off."""
    if _tracer is None:
        return _OFF
    from opentelemetry.trace import SpanKind

    return _tracer.start_as_current_span(name, kind=SpanKind.PRODUCER if producer else SpanKind.INTERNAL)


def traceparent() -> str | None:
    """The current span as a W3C traceparent, for a job or an event to carry; None when off."""
    if _tracer is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _remote(traceparent: str | None) -> Context | None:
    """The context a carried traceparent names (a new trace for None or a malformed one)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


class RequestTrace:
    """The api's span for one request, current from process_request to process_response."""

    __slots__ = ("_span", "_token")

    def __init__(self, method: str, traceparent: str | None) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        # A caller's traceparent is honoured, as every W3C service does: its trace continues here.
        self._span: Span = _on().start_span(
            method,
            context=_remote(traceparent),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        )
        self._token = context.attach(trace.set_span_in_context(self._span))

    def end(self, method: str, route: str | None, status: int) -> None:
        from opentelemetry import context
        from opentelemetry.trace import StatusCode

        if route:
            # The route template, not the path: ids in span names would defeat grouping.
            self._span.update_name(f"{method} {route}")
            self._span.set_attribute("http.route", route)
        self._span.set_attribute("http.response.status_code", status)
        if status >= 500:
            self._span.set_status(StatusCode.ERROR)
        context.detach(self._token)
        self._span.end()


def request(method: str, traceparent: str | None) -> RequestTrace | None:
    """A span for an api request (made current), None when off."""
    return None if _tracer is None else RequestTrace(method, traceparent)


class JobTrace:
    """A worker's span for one job, from its start until finishing has written its outcome, and
    the "publish" span of the finishing transaction that writes its events."""

    __slots__ = ("_context", "_publish", "_span")

    def __init__(self, span: Span) -> None:
        from opentelemetry.trace import set_span_in_context

        self._span = span
        self._context = set_span_in_context(span)
        self._publish: Span | None = None

    async def run(self, call: Awaitable[T]) -> T:
        """Await the job's coroutine with the job span current (its "store" nests under it)."""
        from opentelemetry import context

        token = context.attach(self._context)
        try:
            return await call
        finally:
            context.detach(token)

    @contextlib.contextmanager
    def publishing(self, staged: int) -> Iterator[None]:
        """Current while the job's outbox is staged in the finishing transaction, so that each
        event it stages carries the publish span; the span ends once that transaction is written."""
        from opentelemetry import context
        from opentelemetry.trace import SpanKind, StatusCode, set_span_in_context

        if self._publish is not None:  # Redis was away and the transaction is written again
            self._publish.set_status(StatusCode.ERROR, "Redis was away; the transaction was written again")
            self._publish.end()
        self._publish = _on().start_span(
            "publish", context=self._context, kind=SpanKind.PRODUCER, attributes={"job.staged": staged}
        )
        token = context.attach(set_span_in_context(self._publish))
        try:
            yield
        finally:
            context.detach(token)

    def end(self, kind: str) -> None:
        """The outcome is written (complete, failed, retry or release): both spans end."""
        from opentelemetry.trace import StatusCode

        if self._publish is not None:
            self._publish.end()
        self._span.set_attribute("job.outcome", kind)
        if kind == "failed":
            self._span.set_status(StatusCode.ERROR)
        self._span.end()


def job(
    traceparent: str | None, function: str, job_id: str, tries: int, enqueued_ms: int, started_ms: int
) -> JobTrace | None:
    """The span of a job a worker starts, a child of the span that enqueued it; None when off.

    The time it waited in the queue is a "queued" span beside it, from the enqueuing process's
    timestamp to this start.
    """
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    parent = _remote(traceparent)
    if parent is not None and enqueued_ms:
        queued = _tracer.start_span(
            "queued", context=parent, kind=SpanKind.CONSUMER, start_time=min(enqueued_ms, started_ms) * _NS
        )
        queued.end(end_time=started_ms * _NS)
    span = _tracer.start_span(
        f"job {function}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"job.id": job_id, "job.function": function, "job.try": tries},
        start_time=started_ms * _NS,
    )
    return JobTrace(span)


def publishing(trace: JobTrace | None, staged: int) -> AbstractContextManager[None]:
    """`JobTrace.publishing` for a job with something staged; nothing otherwise, or when off."""
    if trace is None or not staged:
        return _OFF
    return trace.publishing(staged)


def deliver(traceparent: str, sockets: int) -> Span | None:
    """A push process's span for one event handed to this user's local sockets, under the publish
    span the event carried; the caller ends it. None when off."""
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    return _tracer.start_span(
        "deliver", context=_remote(traceparent), kind=SpanKind.CONSUMER, attributes={"push.sockets": sockets}
    )
