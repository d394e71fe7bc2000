"""LOG_FORMAT=json: one JSON object a line, for log pipelines that parse rather than grep.

Each line holds `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message` and `process`
(the Procfile's process type), then `trace_id` and `span_id` while an OpenTelemetry span is
current, `request_id` while the api answers a request that named one (X-Request-Id), and
`exception` (the scrubbed traceback) when the record carries one. The redacting filter runs before
the formatter, so the message and the exception are already what chat.infra.failures lets out.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

# Set by the api's request middleware for the request's own task (each request runs in its own
# task, so one request's id never leaks into another's lines).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# An id a client or a proxy chose: bounded and printable, or it is not logged at all.
MAX_REQUEST_ID_LENGTH = 128

# The Procfile's process type, by the module `python -m` ran (or the program's name).
PROCESS_TYPES = {
    "api": "web",
    "workers": "worker",
    "push": "push",
    "devserver": "dev",
    "alembic": "release",
    "chat.cli": "cli",
    "arq": "worker",
}


def process_type(argv0: str | None = None) -> str:
    """`web`, `worker`, `push`, `dev`, `release` or `cli`, as started; else the program's name."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = spec.name.removesuffix(".__main__") if spec is not None and spec.name else ""
    if name in PROCESS_TYPES:
        return PROCESS_TYPES[name]
    program = (argv0 if argv0 is not None else (sys.argv[0] if sys.argv else "")).rsplit("/", 1)[-1]
    if program == "headless-chat":
        return "cli"
    return PROCESS_TYPES.get(program, program or "python")


def request_id_from(header: str | None) -> str | None:
    """The X-Request-Id a proxy or a client sent, if it is fit to log."""
    if not header or len(header) > MAX_REQUEST_ID_LENGTH or not header.isprintable():
        return None
    return header


def current_span_ids() -> tuple[str, str] | None:
    """The current OpenTelemetry span's (trace id, span id) in hex, or None.

    Looked up only once OpenTelemetry is loaded: with tracing off (chat.infra.tracing imports
    nothing of it) or the package not installed, no span can be current and nothing is imported here.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON (see the module's docstring for the fields)."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
        }
        ids = current_span_ids()
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        # Redact has turned exc_info into scrubbed exc_text already; a record that skipped it
        # (a handler without the filter) still gets logging's own rendering.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # The message is one field: a newline inside it cannot start a line a parser would misread.
        return orjson.dumps(line, default=str).decode()
