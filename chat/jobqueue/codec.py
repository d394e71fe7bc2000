"""Job bodies as arq reads them, in JSON: whole, with the seq spliced in by the send script, and
back again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from arq.jobs import SerializationError, deserialize_job_raw
from arq.utils import ms_to_datetime, timestamp_ms

from chat.infra import tracing

__all__ = [
    "SerializationError",
    "deserialize",
    "job_body",
    "ms_to_datetime",
    "read_job",
    "seq_splice",
    "serialize",
    "timestamp_ms",
    "trace_of",
]

# What `read_job` gives: function, args, kwargs, tries (None when the body has none), enqueued ms.
JobFields = tuple[str, tuple[Any, ...], dict[str, Any], int | None, int]


def serialize(obj: Any) -> bytes:
    # Jobs are JSON, never pickle: anyone able to write to Redis could otherwise run code in a worker.
    return orjson.dumps(obj, default=_json_default)


def deserialize(data: bytes) -> Any:
    return orjson.loads(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def job_body(function: str, args: Sequence[Any], enqueued_ms: int, tries: int | None = None) -> bytes:
    """A job as `ArqRedis.enqueue_job` serialises it with the product's JSON serializer.

    The args come last, so that the api's send script can splice the seq into the payload. With
    tracing on, `"tp"` before them is the span enqueuing the job (arq reads none but its own keys).
    """
    parent = tracing.traceparent()
    if parent is None:
        return serialize({"t": tries, "f": function, "k": {}, "et": enqueued_ms, "a": list(args)})
    return serialize({"t": tries, "f": function, "k": {}, "et": enqueued_ms, "tp": parent, "a": list(args)})


def trace_of(body: bytes) -> str | None:
    """The traceparent a job body carries (`job_body`), found without decoding the whole body."""
    # Only among the keys before the args, which are all ours.
    args = body.find(b',"a":[')
    start = body.find(b'"tp":"', 0, args)
    if start < 0:
        return None
    start += len(b'"tp":"')
    end = body.find(b'"', start, args)
    return body[start:end].decode("ascii", "replace") if end > 0 else None


def seq_splice(function: str, payload: dict[str, Any], enqueued_ms: int) -> tuple[bytes, bytes]:
    """The body of a one-payload job around a `seq` not known yet: the send script writes
    `head .. seq .. tail`, the payload with `"seq":<n>` as its last field."""
    body = job_body(function, [payload], enqueued_ms)
    return body[:-3] + b',"seq":', b"}]}"


def read_job(body: bytes) -> JobFields:
    """A job body as arq's worker reads it; raises SerializationError on one it cannot."""
    function, args, kwargs, tries, enqueued_ms = deserialize_job_raw(body, deserializer=deserialize)
    return function, tuple(args), dict(kwargs), tries, enqueued_ms
