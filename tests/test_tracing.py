"""Traces (chat.infra.tracing): off, nothing of OpenTelemetry is loaded and no byte changes; on, the
context rides in the job body and the event, and push strips it before the client's frame.

The whole path through the real processes is tests/e2e/test_tracing.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import falcon
import falcon.asgi
import falcon.testing
import orjson
import pytest
from arq.jobs import deserialize_job_raw
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from api.observe import RequestSpans
from chat.infra import tracing
from chat.jobqueue.codec import deserialize, job_body, seq_splice, trace_of
from chat.realtime.eventbus import channel
from chat.realtime.events import MessageCreated, decode, encode, frame, untraced
from push.hub import Hub
from tests.support.messages import message_created
from tests.support.otlp import receiver
from tests.support.stack import ROOT

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any OTEL_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return env | extra


def run_python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_off_nothing_of_opentelemetry_is_imported_and_nothing_changes() -> None:
    """The three processes' apps built with OTEL_EXPORTER_OTLP_ENDPOINT unset, a job and an event
    encoded: OpenTelemetry stays unimported, and the bytes carry no trace context."""
    code = """
import sys, uuid
import api.asgi
from chat.settings import Settings
from push.app import create_app
from workers.main import create_worker
from chat.infra import tracing
from chat.jobqueue.codec import job_body
from chat.realtime.events import ReactionAdded, ReactionRef, encode

create_app(Settings())
create_worker(Settings())
assert not tracing.enabled()
assert tracing.span("enqueue") is tracing.span("store")  # one shared no-op: nothing allocated
assert b'"tp"' not in job_body("persist_message", [{"a": 1}], 1)
ref = ReactionRef(message_id=uuid.uuid4(), emoji="x", user_id=uuid.uuid4())
assert b"_traceparent" not in encode(ReactionAdded(conversation_id=uuid.uuid4(), data=ref))
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print(loaded)
"""
    env = clean_env(
        ENVIRONMENT="test",
        SECRET_KEY="s" * 40,
        DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    assert run_python(code, env).strip() == "[]"


@pytest.mark.parametrize(
    ("extra", "service"),
    [
        ({}, "headless-chat-worker"),
        ({"OTEL_SERVICE_NAME": "chat-eu-1"}, "chat-eu-1"),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, None),
    ],
)
def test_setup_exports_over_otlp_http_under_the_standard_variables(
    extra: dict[str, str], service: str | None
) -> None:
    code = """
from opentelemetry import trace
from chat.infra import tracing

assert tracing.setup("worker")
with tracing.span("probe"):
    pass
trace.get_tracer_provider().shutdown()  # flushes the batch
"""
    with receiver() as otlp:
        run_python(code, clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, **extra))
        spans = otlp.spans
    if service is None:  # the sampler said no: nothing recorded, nothing sent
        assert spans == []
    else:
        [span] = spans
        assert (span.name, span.service, span.parent_id) == ("probe", service, "")


def test_a_missing_extra_leaves_tracing_off_with_one_warning() -> None:
    code = """
import builtins, logging
real = builtins.__import__
def refuse(name, *args, **kwargs):
    if name.startswith("opentelemetry"):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return real(name, *args, **kwargs)
builtins.__import__ = refuse
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from chat.infra import tracing
assert not tracing.setup("web") and not tracing.enabled()
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'headless-chat[tracing]'" in done.stderr and "tracing stays off" in done.stderr


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ""},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_what_keeps_tracing_off(environ: dict[str, str]) -> None:
    assert not tracing.endpoint_set(environ)


def test_either_endpoint_variable_turns_it_on() -> None:
    assert tracing.endpoint_set({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing.endpoint_set({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})


# In-process: this process's tracer swapped for one that keeps its spans in memory.


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def hex_ids(span: ReadableSpan) -> tuple[str, str, str]:
    """(trace id, span id, parent span id or "") in hex."""
    context = span.get_span_context()
    assert context is not None
    parent = span.parent.span_id if span.parent is not None else None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", "" if parent is None else f"{parent:016x}"


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def message(body: str = "hi") -> MessageCreated:
    return message_created(uuid.uuid4(), 7, body)


def test_a_job_body_carries_the_enqueuing_span(spans: InMemorySpanExporter) -> None:
    payload = {"message_id": "m", "body": 'a text with "tp":"00-x" in it'}
    with tracing.span("enqueue", producer=True):
        parent = tracing.traceparent()
        body = job_body("persist_message", [payload], 1234)
        head, tail = seq_splice("persist_message", payload, 1234)
    [enqueue] = spans.get_finished_spans()
    assert parent == traceparent_of(enqueue) and enqueue.kind is SpanKind.PRODUCER
    assert trace_of(body) == parent
    # arq reads its own keys and ignores ours; the send script's splice still ends the payload.
    read = deserialize_job_raw(body, deserializer=deserialize)
    assert list(read) == ["persist_message", [payload], {}, None, 1234]
    spliced = orjson.loads(head + b"9" + tail)
    assert spliced["tp"] == parent and spliced["a"] == [payload | {"seq": 9}]
    assert trace_of(job_body("persist_message", [payload], 1234)) is None  # no span current


def test_an_event_carries_the_publishing_span_and_the_client_frame_is_unchanged(
    spans: InMemorySpanExporter,
) -> None:
    # A body holding the marker's text: escaped inside a string, it cannot pass for the field.
    event = message(body=',"_traceparent":"' + "0" * 55 + '"}')
    plain = encode(event)
    with tracing.span("publish"):
        parent = tracing.traceparent()
        traced = encode(event)
    assert parent is not None and traced != plain
    sent, carried = untraced(frame("1-0", traced).decode())
    assert carried == parent
    assert sent == frame("1-0", plain).decode()  # byte for byte what an untraced event gives
    assert untraced(frame("1-0", plain).decode()) == (frame("1-0", plain).decode(), None)
    assert decode(traced) == decode(plain) == event


class Socket:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.frames: list[str] = []

    def offer(self, frame: str) -> None:
        self.frames.append(frame)
        # The deliver span is current for nothing: push starts it for the frame, not as a context.
        assert tracing.traceparent() is None

    def restart(self) -> None:
        raise AssertionError("not restarted here")

    def deactivated(self) -> None:
        raise AssertionError("not deactivated here")


async def test_push_delivers_the_untraced_frame_under_a_deliver_span(spans: InMemorySpanExporter) -> None:
    user = str(uuid.uuid4())
    hub = Hub(redis=None)  # type: ignore[arg-type]  # _fan_out reads no Redis
    phone, laptop = Socket(user), Socket(user)
    hub._local[user] = {phone, laptop}
    event = message()
    with tracing.span("publish"):
        parent = tracing.traceparent()
        traced = frame("5-0", encode(event))
    hub._fan_out(channel(user), traced)
    expected = frame("5-0", message_bytes := encode(event)).decode()
    assert b"_traceparent" not in message_bytes
    assert phone.frames == laptop.frames == [expected]
    [publish, deliver] = spans.get_finished_spans()
    assert parent == traceparent_of(publish) and hex_ids(deliver)[2] == hex_ids(publish)[1]
    assert deliver.name == "deliver" and deliver.kind is SpanKind.CONSUMER
    assert deliver.attributes == {"push.sockets": 2}


def test_push_strips_the_context_with_its_own_tracing_off() -> None:
    """Workers tracing and push not: the client's frame is still the contract's."""
    assert not tracing.enabled()
    user = str(uuid.uuid4())
    hub = Hub(redis=None)  # type: ignore[arg-type]
    phone = Socket(user)
    hub._local[user] = {phone}
    plain = frame("5-0", encode(message()))
    hub._fan_out(channel(user), plain[:-1] + b',"_traceparent":"' + CALLER.encode() + b'"}')
    assert phone.frames == [plain.decode()]


async def test_a_job_span_is_the_enqueuers_child_and_holds_store_and_publish(
    spans: InMemorySpanExporter,
) -> None:
    trace = tracing.job(CALLER, "persist_message", "persist:x", 2, enqueued_ms=1_000, started_ms=1_250)
    assert trace is not None

    async def persist() -> str | None:
        with tracing.span("store"):
            pass
        return tracing.traceparent()

    inside = await trace.run(persist())
    assert tracing.traceparent() is None  # current only while the job ran
    with tracing.publishing(trace, staged=1):
        published = tracing.traceparent()
    with tracing.publishing(trace, staged=0):
        assert tracing.traceparent() is None  # nothing staged: no publish span
    trace.end("complete")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"queued", "job persist_message", "store", "publish"}
    caller_trace, caller_span = CALLER.split("-")[1:3]
    job_ids, queued_ids = hex_ids(by_name["job persist_message"]), hex_ids(by_name["queued"])
    assert job_ids[0] == caller_trace and job_ids[2] == queued_ids[2] == caller_span
    assert hex_ids(by_name["store"])[2] == hex_ids(by_name["publish"])[2] == job_ids[1]
    assert inside == traceparent_of(by_name["job persist_message"])
    assert published == traceparent_of(by_name["publish"])
    queued = by_name["queued"]
    assert (queued.start_time, queued.end_time) == (1_000 * 1_000_000, 1_250 * 1_000_000)
    assert by_name["job persist_message"].attributes == {
        "job.id": "persist:x",
        "job.function": "persist_message",
        "job.try": 2,
        "job.outcome": "complete",
    }


async def test_a_job_without_a_carried_context_starts_its_own_trace(spans: InMemorySpanExporter) -> None:
    trace = tracing.job(None, "react", "react:x", 1, enqueued_ms=1_000, started_ms=1_001)
    assert trace is not None
    trace.end("failed")
    [job] = spans.get_finished_spans()  # no "queued": it would be a trace of its own
    assert job.parent is None and not job.status.is_ok


class Things:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, thing_id: str) -> None:
        resp.media = {"traceparent": tracing.traceparent()}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, thing_id: str) -> None:
        raise RuntimeError("a bug")


def test_the_api_span_names_the_route_continues_a_callers_trace_and_marks_5xx(
    spans: InMemorySpanExporter,
) -> None:
    app = falcon.asgi.App(middleware=[RequestSpans()])
    app.add_route("/things/{thing_id}", Things())
    client = falcon.testing.TestClient(app)
    got = client.simulate_get("/things/42", headers={"traceparent": CALLER})
    failed = client.simulate_post("/things/42")
    assert failed.status_code == 500
    first, second = spans.get_finished_spans()
    trace_id, _, parent_id = hex_ids(first)
    assert CALLER.split("-")[1:3] == [trace_id, parent_id]
    assert got.json == {"traceparent": traceparent_of(first)}  # current in the responder
    attributes: dict[str, Any] = dict(first.attributes or {})
    assert first.name == "GET /things/{thing_id}" and first.kind is SpanKind.SERVER
    assert attributes == {
        "http.request.method": "GET",
        "http.route": "/things/{thing_id}",
        "http.response.status_code": 200,
    }
    assert first.status.is_ok and not second.status.is_ok and second.parent is None
