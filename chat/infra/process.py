"""What every process type does first: logging as operators read it, and the fast event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from chat.infra.failures import scrub_text, scrubbed_traceback, unavailable_reason
from chat.infra.logformat import JsonFormatter, process_type
from chat.settings import Settings

# Collect the youngest generation every 50,000 net allocations instead of 700: a message's trip
# through a process allocates thousands of short-lived objects, and at 700 the collector ran
# several times per message for nothing.
GC_THRESHOLD_0 = 50_000


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _LogSettings(BaseSettings):
    """LOG_FORMAT alone, from the environment and `.env` as Settings reads them: logging is set up
    before the settings are, so that a problem with any other setting cannot stop it."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    log_format: str = "text"


def log_format() -> str:
    """`json` or `text`; a value Settings would refuse logs as text until settings_or_exit says so."""
    chosen = _LogSettings().log_format
    return "json" if chosen == "json" else "text"


def configure_logging() -> None:
    """The root logger's handler (stderr, or one a config file made), in LOG_FORMAT, redacting.

    uvicorn's loggers propagate here too: chat.infra.serving.Config gives uvicorn no logging
    config of its own, which would add handlers of its own format that bypass Redact.
    """
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format=TEXT_FORMAT)
    # arq logs every job with its arguments at INFO, and here those are message bodies.
    logging.getLogger("arq.worker").setLevel(max(logging.WARNING, logging.getLogger().level))
    withhold_job_args()
    # httpx logs every webhook request at INFO with its URL, which may carry the receiver's token;
    # httpcore, below it, logs each request's steps at DEBUG.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    json_lines = log_format() == "json"
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, Redact) for f in handler.filters):
            handler.addFilter(Redact())
        if json_lines and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter(process_type()))


class Redact(logging.Filter):
    """The last guard on every line the process writes, whoever logs it (a library, asyncio's
    "exception was never retrieved"): URLs lose their credentials and query, Postgres's DETAIL and
    redis-py's quoted commands are withheld, and a traceback is written as chat.infra.failures scrubs it.
    The code's own log lines are safe already (chat.infra.failures.describe); this catches the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: logging reports that itself
            return True
        safe = scrub_text(message)
        if safe != message:
            record.msg, record.args = safe, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrubbed_traceback(record.exc_info[1])
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        return True


# arq's line as each job starts: elapsed, "job_id:function", the arguments' repr, tries.
_ARQ_JOB_START = "%6.2fs → %s(%s)%s"


class WithholdJobArgs(logging.Filter):
    """On arq's own worker logger: a job's start line keeps its id, function and try but not its
    arguments (message bodies), and a job's failure is described as chat.infra.failures describes one."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg == _ARQ_JOB_START and isinstance(args, tuple) and len(args) == 4:
            record.args = (args[0], args[1], "…", args[3])
        elif isinstance(args, tuple):
            record.args = tuple(unavailable_reason(a) if isinstance(a, BaseException) else a for a in args)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrubbed_traceback(record.exc_info[1])
            record.exc_info = None
        return True


def withhold_job_args() -> None:
    """Install WithholdJobArgs on arq's worker logger (once). Called by configure_logging and by
    the worker's start-up: `arq workers.main.WorkerSettings` logs through arq's own logging config,
    at INFO, and never calls configure_logging."""
    logger = logging.getLogger("arq.worker")
    if not any(isinstance(f, WithholdJobArgs) for f in logger.filters):
        logger.addFilter(WithholdJobArgs())


def use_uvloop() -> None:
    """uvloop where it is installed (it is with uvicorn[standard]); asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def settle_gc() -> None:
    """Called once start-up is done: what exists now (modules, app, pools) lives as long as the
    process, so it goes out of the collector's sight (gc.freeze) instead of being scanned again
    by every full collection, the pauses that show up as tail latency."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_0, second, third)


def settings_or_exit() -> Settings:
    """The process's settings, or one line per missing or invalid setting on stderr and exit 2.

    pydantic's own report is a traceback of some fifty lines for one missing SECRET_KEY; an
    operator needs the setting's name and what it wants.
    """
    try:
        return Settings()
    except ValidationError as exc:
        json_lines = log_format() == "json"
        for problem in setting_problems(exc):
            if json_lines:  # a log pipeline that parses every line gets these as lines it can parse
                logging.getLogger("chat.settings").error("%s", problem)
            else:
                print(f"headless-chat: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def setting_problems(exc: ValidationError) -> list[str]:
    """Each missing or invalid setting as `NAME: what it needs` (or the message alone, for a check
    of several settings at once)."""
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return problems
