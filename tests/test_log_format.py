"""LOG_FORMAT=json: one JSON object a line from every process type, redacted, with the ids a reader
joins on (chat/infra/logformat.py)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi
import falcon.testing
import pytest
from opentelemetry.sdk.trace import TracerProvider

from api.observe import RequestMetrics
from chat.infra import logformat
from chat.infra.logformat import JsonFormatter, current_span_ids, process_type, request_id_from
from chat.infra.process import Redact

ROOT = Path(__file__).resolve().parents[1]


def lines_of(text: str) -> list[dict[str, Any]]:
    """Every line parsed as one JSON object (a line that is not one fails the test)."""
    parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert parsed and all(isinstance(line, dict) for line in parsed), text
    return parsed


@pytest.fixture
def json_log() -> Any:
    """A logger writing through Redact and JsonFormatter, as configure_logging sets the root up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(Redact())
    handler.setFormatter(JsonFormatter("web"))
    logger = logging.getLogger("tests.logformat")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, out
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_record_is_one_line_of_json_with_the_fields(json_log: Any) -> None:
    logger, out = json_log
    before = datetime.now(UTC) - timedelta(seconds=1)
    logger.warning("two\nlines for %s", "alice")
    [line] = lines_of(out.getvalue())
    assert set(line) == {"time", "level", "logger", "message", "process"}
    assert line["level"] == "WARNING" and line["logger"] == "tests.logformat" and line["process"] == "web"
    assert line["message"] == "two\nlines for alice"
    assert line["time"].endswith("Z")
    assert before <= datetime.fromisoformat(line["time"]) <= datetime.now(UTC)


def test_redaction_still_applies_to_message_and_exception(json_log: Any) -> None:
    logger, out = json_log
    password = "hunter2"  # not in the raising line, which the traceback quotes as source
    try:
        raise ConnectionError(f"redis://user:{password}@cache:6379/0 refused")
    except ConnectionError:
        logger.exception("cannot reach postgresql://chat:s3cret@db/chat")
    [line] = lines_of(out.getvalue())
    assert "s3cret" not in line["message"] and "REDACTED" in line["message"]
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ConnectionError" in line["exception"] and "hunter2" not in line["exception"]


def test_the_current_span_gives_trace_and_span_ids(json_log: Any) -> None:
    logger, out = json_log
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("job") as span:
        logger.info("inside")
    logger.info("outside")
    inside, outside = lines_of(out.getvalue())
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}" and len(inside["trace_id"]) == 32
    assert inside["span_id"] == f"{context.span_id:016x}" and len(inside["span_id"]) == 16
    assert "trace_id" not in outside and "span_id" not in outside


def test_without_opentelemetry_loaded_there_are_no_span_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tracing off imports nothing of OpenTelemetry; neither does a log line.
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    assert current_span_ids() is None
    assert "opentelemetry.trace" not in sys.modules


def test_request_id_only_while_set_and_only_if_fit_to_log(json_log: Any) -> None:
    logger, out = json_log
    token = logformat.REQUEST_ID.set("req-42")
    logger.info("in a request")
    logformat.REQUEST_ID.reset(token)
    logger.info("after it")
    inside, after = lines_of(out.getvalue())
    assert inside["request_id"] == "req-42" and "request_id" not in after
    assert request_id_from("abc-123") == "abc-123"
    assert request_id_from(None) is None and request_id_from("") is None
    assert request_id_from("x" * 129) is None and request_id_from("a\nb") is None


async def test_the_api_middleware_gives_a_request_its_x_request_id(json_log: Any) -> None:
    logger, out = json_log

    class Logs:
        async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            logger.info("answering")

    app = falcon.asgi.App(middleware=[RequestMetrics()])
    app.add_route("/logs", Logs())
    async with falcon.testing.ASGIConductor(app) as conductor:
        await conductor.simulate_get("/logs", headers={"X-Request-Id": "edge-7f3a"})
        await conductor.simulate_get("/logs")
    named, unnamed = lines_of(out.getvalue())
    assert named["request_id"] == "edge-7f3a"
    assert "request_id" not in unnamed


@pytest.mark.parametrize(
    ("main", "expected"),
    [
        ("api.__main__", "web"),
        ("workers.__main__", "worker"),
        ("push.__main__", "push"),
        ("devserver.__main__", "dev"),
        ("alembic.__main__", "release"),
        ("chat.cli", "cli"),
    ],
)
def test_process_type_from_the_module_run(monkeypatch: pytest.MonkeyPatch, main: str, expected: str) -> None:
    monkeypatch.setitem(
        sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(name=main))
    )
    assert process_type() == expected


def test_process_type_from_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=None))
    assert process_type("/usr/local/bin/headless-chat") == "cli"
    assert process_type("/srv/.venv/bin/alembic") == "release"


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(ROOT), "LOG_FORMAT": "json", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_each_process_type_reports_a_bad_setting_as_json(tmp_path: Path) -> None:
    # Each entry point set up logging and then refused its settings: the lines on stderr are JSON.
    starts = {
        "api": "web",
        "workers": "worker",
        "push": "push",
        "devserver": "dev",
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_FORMAT": "json", "ACCESS_TOKEN_EXPIRE_MINUTES": "0"}
    running = {
        module: subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in starts
    }
    for module, process in running.items():
        _, err = process.communicate(timeout=60)
        assert process.returncode == 2, err
        [line] = lines_of(err)
        assert line["process"] == starts[module] and line["level"] == "ERROR"
        assert line["message"].startswith("ACCESS_TOKEN_EXPIRE_MINUTES: ")


def test_release_migrations_log_json(tmp_path: Path) -> None:
    done = run(
        ["-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        tmp_path,
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/release.db",
        ENVIRONMENT="test",
    )
    assert done.returncode == 0, done.stderr
    lines = lines_of(done.stderr)
    assert {line["process"] for line in lines} == {"release"}
    assert any(line["logger"] == "alembic.runtime.migration" for line in lines)


def test_uvicorn_and_arq_lines_go_through_the_same_handler(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import logging
        from chat.infra import serving
        from chat.infra.process import configure_logging

        configure_logging()
        serving.Config("api.asgi:app", header_timeout=1.0).configure_logging()
        # uvicorn runs at WARNING (serving.Config): what it says is what went wrong.
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request from http://u:pw@0.0.0.0:1")
        access = ("1.2.3.4:5", "GET", "/x", "1.1", 200)
        logging.getLogger("uvicorn.access").warning('%s - "%s %s HTTP/%s" %d', *access)
        logging.getLogger("arq.worker").warning("job failed")
        """
    )
    done = run(["-c", script], tmp_path, LOG_LEVEL="INFO")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    error, access, arq = lines_of(done.stderr)
    assert error["logger"] == "uvicorn.error" and "pw" not in error["message"]
    assert access["logger"] == "uvicorn.access" and access["message"] == '1.2.3.4:5 - "GET /x HTTP/1.1" 200'
    assert arq["logger"] == "arq.worker" and arq["level"] == "WARNING"


def test_text_stays_the_default(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import logging
        from chat.infra.process import configure_logging

        configure_logging()
        logging.getLogger("x").warning("plain")
        """
    )
    done = run(["-c", script], tmp_path, LOG_FORMAT="text")
    assert done.stderr.rstrip().endswith(" WARNING x plain") and not done.stderr.startswith("{")
