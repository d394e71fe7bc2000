"""The metrics the alert rules and the dashboard need beyond the counters every process had:
POST-to-delivery latency, dependencies up or down, the oldest queued job's age."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from chat.infra import metrics, probes
from chat.realtime import events
from chat.schemas import MessageOut


def delivered_count() -> float:
    return REGISTRY.get_sample_value("chat_message_delivery_seconds_count") or 0.0


def delivered_sum() -> float:
    return REGISTRY.get_sample_value("chat_message_delivery_seconds_sum") or 0.0


def frame(created_at: datetime, body: str = "hi") -> str:
    message = MessageOut(
        id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        seq=1,
        sender_id=None,
        body=body,
        client_id=None,
        created_at=created_at,
        edited_at=None,
        deleted=False,
    )
    event = events.MessageCreated(conversation_id=message.conversation_id, data=message)
    return events.encode(event).decode()


def test_a_message_created_frame_is_timed_from_its_post() -> None:
    count, total = delivered_count(), delivered_sum()
    metrics.observe_delivery(frame(datetime.now(UTC) - timedelta(seconds=2)))
    assert delivered_count() == count + 1
    assert 2 <= delivered_sum() - total < 3


def test_a_body_that_mimics_the_field_is_not_read() -> None:
    # The body comes first in the frame; its quotes are escaped, so its fake created_at never matches.
    count, total = delivered_count(), delivered_sum()
    fake = '"created_at":"2000-01-01T00:00:00+00:00"'
    metrics.observe_delivery(frame(datetime.now(UTC), body=fake))
    assert delivered_count() == count + 1 and delivered_sum() - total < 1


def test_other_frames_are_not_timed() -> None:
    count = delivered_count()
    metrics.observe_delivery('{"conversation_id":"x","type":"typing","data":{"created_at":"2020-01-01"}}')
    metrics.observe_delivery("not json at all")
    assert delivered_count() == count


async def test_readiness_sets_dependency_up() -> None:
    async def answers() -> None:
        return None

    async def refuses() -> None:
        raise ConnectionRefusedError

    readiness = probes.Readiness({"database": answers, "redis": refuses})
    assert await readiness.check() == {"database": "ok", "redis": "error: ConnectionRefusedError"}
    assert REGISTRY.get_sample_value("chat_dependency_up", {"dependency": "database"}) == 1
    assert REGISTRY.get_sample_value("chat_dependency_up", {"dependency": "redis"}) == 0


def test_the_worker_serves_the_oldest_job_age() -> None:
    metrics.QUEUE_OLDEST_AGE.labels("arq:queue").set(3.5)
    served = metrics.WORKER_METRICS.get_sample_value(
        "arq_queue_oldest_job_age_seconds", {"queue": "arq:queue"}
    )
    assert served == 3.5
