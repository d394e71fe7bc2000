"""One message followed across the real web, worker and push processes, exporting to an OTLP
receiver this test starts: one trace, and its spans nested in the order the message went."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import orjson
import pytest

from chat.realtime.eventbus import EVENT_FIELD, stream_key
from tests.support import services
from tests.support.otlp import Receiver, Span, receiver
from tests.support.sockets import direct, open_ws
from tests.support.stack import E2E_REDIS_URL, Client, Process, Stack

SEND_ROUTE = "/api/v1/conversations/{conversation_id}/messages"


@pytest.fixture(scope="module")
def otlp() -> Iterator[Receiver]:
    with receiver() as found:
        yield found


@pytest.fixture(scope="module")
def traced(otlp: Receiver, stack: Stack) -> dict[str, Process]:
    # The receiver first, so that it outlives the processes and takes their last batch at exit; a
    # short batch delay, so that spans arrive within the test's wait, not 5 s later.
    return {
        kind: stack.start(kind, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="50")
        for kind in ("web", "worker", "push")
    }


@pytest.fixture
def web(traced: dict[str, Process]) -> Process:
    return traced["web"]


def one(spans: list[Span], name: str) -> Span:
    [span] = [s for s in spans if s.name == name]
    return span


async def test_a_message_is_one_trace_from_the_post_to_the_socket(
    client: Client, traced: dict[str, Process], otlp: Receiver
) -> None:
    alice, bob = await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    bob_ws, _ = await open_ws(traced["push"], bob)
    # The caller's own trace continues in the api (W3C traceparent), so this test knows its id.
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    try:
        sent = await client.http.post(
            f"/conversations/{cid}/messages",
            json={"body": "where did I spend my 300 ms?"},
            headers=alice["headers"] | {"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        assert sent.status_code == 202, sent.text
        raw = await bob_ws.recv()
    finally:
        await bob_ws.close()
    frame = orjson.loads(raw)
    # The client's frame is the contract's, with nothing of the trace in it.
    assert set(frame) == {"event_id", "conversation_id", "type", "data"}
    assert frame["data"]["id"] == sent.json()["id"]

    names = {"POST " + SEND_ROUTE, "enqueue", "queued", "job persist_message", "store", "publish", "deliver"}
    spans = otlp.wait_for(lambda got: names <= {s.name for s in got if s.trace_id == trace_id})
    mine = [s for s in spans if s.trace_id == trace_id]
    request, enqueue = one(mine, "POST " + SEND_ROUTE), one(mine, "enqueue")
    queued, job = one(mine, "queued"), one(mine, "job persist_message")
    store, publish, deliver = one(mine, "store"), one(mine, "publish"), one(mine, "deliver")

    # Each process says who it is, and each span hangs under the one before it.
    assert {(s.name, s.service, s.kind) for s in (request, enqueue, job, store, publish, deliver)} == {
        ("POST " + SEND_ROUTE, "headless-chat-web", "SERVER"),
        ("enqueue", "headless-chat-web", "PRODUCER"),
        ("job persist_message", "headless-chat-worker", "CONSUMER"),
        ("store", "headless-chat-worker", "INTERNAL"),
        ("publish", "headless-chat-worker", "PRODUCER"),
        ("deliver", "headless-chat-push", "CONSUMER"),
    }
    assert request.parent_id == caller_span
    assert enqueue.parent_id == request.span_id
    assert queued.parent_id == job.parent_id == enqueue.span_id
    assert store.parent_id == publish.parent_id == job.span_id
    assert deliver.parent_id == publish.span_id
    assert request.attributes["http.response.status_code"] == 202
    assert job.attributes["job.id"] == sent.json()["job_id"] and job.attributes["job.outcome"] == "complete"
    assert deliver.attributes["push.sockets"] == 1
    # And in the order the message went (one machine, one clock): POST, queue, store, publish, socket.
    # The queue wait starts at the job body's enqueue time, which is in whole milliseconds.
    assert request.start_ns <= enqueue.start_ns < queued.start_ns + 1_000_000
    assert queued.start_ns <= queued.end_ns == job.start_ns
    assert job.start_ns <= store.start_ns <= store.end_ns <= publish.start_ns <= deliver.start_ns
    assert publish.end_ns <= job.end_ns
    assert not any(s.error for s in mine)


async def test_a_replayed_event_holds_nothing_of_the_trace(
    client: Client, traced: dict[str, Process], otlp: Receiver
) -> None:
    alice, bob = await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    bob_ws, _ = await open_ws(traced["push"], bob)
    try:
        first = await client.http.post(
            f"/conversations/{cid}/messages", json={"body": "1"}, headers=alice["headers"]
        )
        seen = orjson.loads(await bob_ws.recv())
    finally:
        await bob_ws.close()
    assert seen["data"]["id"] == first.json()["id"]
    # Sent while Bob is away: stored in his stream with the publish span's context, which the
    # replay must leave out as the live path does.
    second = await client.http.post(
        f"/conversations/{cid}/messages", json={"body": "2"}, headers=alice["headers"]
    )
    job_id = second.json()["job_id"]
    otlp.wait_for(lambda got: any(s.attributes.get("job.id") == job_id for s in got))
    redis = services.async_redis_client(E2E_REDIS_URL)
    try:
        stored = await redis.xrevrange(stream_key(bob["id"]), count=1)
    finally:
        await redis.aclose()
    assert b'"_traceparent":"00-' in stored[0][1][EVENT_FIELD]
    bob_ws, replayed = await open_ws(traced["push"], bob, last_event_id=seen["event_id"])
    await bob_ws.close()
    assert set(replayed) == {"event_id", "conversation_id", "type", "data"}
    assert replayed["data"]["id"] == second.json()["id"]
