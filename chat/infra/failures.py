"""Which failures are a dependency being away (retry later) rather than a bug, for every process.

Workers retry what is transient; the api answers `503` with `Retry-After` for it. Neither logs
SQL parameters: a database error's message can quote the values a request sent.

What is safe to log lives here too (`describe`, `scrubbed_traceback`, `redact_url`): a log line
never carries a database error's values (Postgres's DETAIL quotes keys and whole rows, message
bodies included), a Redis pipeline's commands (redis-py quotes them, job bodies included), a
validation error's input, or a URL's credentials and query.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis.exceptions


def _database_errors() -> tuple[type[BaseException], ...]:
    """The database errors that mean "away", of the libraries this process has loaded.

    Looked up, not imported: an error of a library never imported cannot occur, and the push
    process, which never talks to Postgres, stays without SQLAlchemy and asyncpg (a third of its
    memory before it holds a socket).
    """
    errors: list[type[BaseException]] = []
    if (sa := sys.modules.get("sqlalchemy.exc")) is not None:
        errors += [
            sa.OperationalError,
            sa.InterfaceError,
            sa.TimeoutError,
        ]  # Timeout: no pooled connection free
    if (apg := sys.modules.get("asyncpg")) is not None:
        errors += [
            apg.PostgresConnectionError,
            apg.CannotConnectNowError,
            apg.TooManyConnectionsError,
            apg.ConnectionDoesNotExistError,
            apg.TransactionRollbackError,  # deadlocks and serialization failures
        ]
    return tuple(errors)


_REDIS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError: Redis is replaying its AOF
    redis.exceptions.TimeoutError,
    # Full: maxmemory reached under `noeviction`. Redis refuses a script's first write (so all of
    # it) when it started over the limit, and a flagged script before it runs: nothing is left
    # half-written, and the same call succeeds once memory frees up.
    redis.exceptions.OutOfMemoryError,
    # A cluster mid-failover: the slot's master is down and no replica has taken over yet, or the
    # slot is moving. The same call succeeds once the cluster has settled (seconds).
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.SlotNotCoveredError,
)

# SQLSTATE class 40 (transaction rollback), 08 (connection) and the server shutting down: the same
# statement can succeed when tried again.
TRANSIENT_SQLSTATES = ("40", "08", "57P01", "57P02", "57P03")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def unavailable(exc: BaseException) -> str | None:
    """The dependency that is away ("the database", "Redis"), or None when this is not an outage."""
    sa, apg, database = sys.modules.get("sqlalchemy.exc"), sys.modules.get("asyncpg"), _database_errors()
    storage = sys.modules.get("chat.infra.storage")  # looked up, like the database's: push never loads it
    for error in _chain(exc):
        if storage is not None and isinstance(error, storage.StorageUnavailable):
            return "object storage"
        if isinstance(error, _REDIS):
            return "Redis"
        if sa is not None and isinstance(error, sa.DBAPIError):
            sqlstate = getattr(error.orig, "sqlstate", None)
            if error.connection_invalidated or (
                isinstance(sqlstate, str) and sqlstate.startswith(TRANSIENT_SQLSTATES)
            ):
                return "the database"
        if isinstance(error, database):
            return "the database"
        # The worker's batch write speaks to asyncpg directly: its errors arrive unwrapped.
        if (
            apg is not None
            and isinstance(error, apg.PostgresError)
            and str(getattr(error, "sqlstate", "")).startswith(TRANSIENT_SQLSTATES)
        ):
            return "the database"
        # A pooled connection to a server that went away, met by the batch write's asyncpg calls.
        # Not every InterfaceError is this (some are misuse), so only the closed connection counts.
        if apg is not None and isinstance(error, apg.InterfaceError) and "closed" in str(error):
            return "the database"
        if isinstance(error, OSError | TimeoutError):
            # redis-py wraps its socket errors; a bare one comes from the database driver.
            return "the database"
    return None


def is_database_error(exc: BaseException) -> bool:
    """A database error (SQLAlchemy's, or asyncpg's met unwrapped by the batch write), whose
    message may quote a statement's parameters."""
    sa, apg = sys.modules.get("sqlalchemy.exc"), sys.modules.get("asyncpg")
    return (sa is not None and isinstance(exc, sa.DBAPIError)) or (
        apg is not None and isinstance(exc, apg.PostgresError)
    )


def is_transient(exc: BaseException) -> bool:
    """Worth trying again later: a dependency was away, or the database asked for a retry."""
    return unavailable(exc) is not None


def scrubbed_traceback(exc: BaseException) -> str:
    """A traceback for the log, with database errors reduced to SQLSTATE and statement."""
    parts: list[str] = []
    chain = list(reversed(list(_chain(exc))))
    for n, error in enumerate(chain):
        if n:
            parts.append(f"\n{_LINK_CAUSE if error.__cause__ is chain[n - 1] else _LINK_CONTEXT}\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(error.__traceback__))
        parts.append(f"{type(error).__module__}.{type(error).__qualname__}: {_describe(error)}\n")
    return "".join(parts)


# As Python's own traceback joins a chain.
_LINK_CAUSE = "The above exception was the direct cause of the following exception:"
_LINK_CONTEXT = "During handling of the above exception, another exception occurred:"


def _describe(error: BaseException) -> str:
    sa, apg = sys.modules.get("sqlalchemy.exc"), sys.modules.get("asyncpg")
    if sa is not None and isinstance(error, sa.StatementError):
        sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
        return f"SQLSTATE {sqlstate}; statement: {error.statement}"
    if apg is not None and isinstance(error, apg.PostgresError | apg.InterfaceError):
        # The constraint's name says which rule broke without quoting the row that broke it.
        constraint = getattr(error, "constraint_name", None)
        named = f", constraint {constraint}" if constraint else ""
        return (
            f"SQLSTATE {getattr(error, 'sqlstate', None)}{named} (message withheld: it can quote parameters)"
        )
    if type(error).__module__.startswith(("sqlalchemy.dialects", "asyncpg")):
        return "(message withheld: it can quote parameters)"
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(error, pydantic.ValidationError):
        # Its text quotes each invalid input: a message's body, say.
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return f"{error.error_count()} invalid field(s) of {error.title}: {where}"
    return scrub_text(str(error))


# redis-py prefixes a pipeline's error with the whole command it refused, a job's body included.
_PIPELINE_COMMAND = re.compile(r"(Command # \d+ )\(.*\)( of pipeline caused error)", re.DOTALL)
# Postgres's DETAIL quotes keys and whole rows ("Failing row contains (...)"); asyncpg puts it in
# the message, and so does any text built from one.
_DETAIL = re.compile(r"(DETAIL:)[^\n]*")


def scrub_text(text: str) -> str:
    """`text` without what a log line must not carry: a pipeline's commands, Postgres's DETAIL,
    and the credentials, query and fragment of every URL in it."""
    text = _PIPELINE_COMMAND.sub(r"\1(command withheld)\2", text)
    text = _DETAIL.sub(r"\1 (withheld: it quotes values)", text)
    return redact_urls(text)


def describe(exc: BaseException) -> str:
    """One line for a log (or a dead letter) about `exc`: its type and a message as safe as
    `scrubbed_traceback`'s."""
    return f"{type(exc).__name__}: {_describe(exc)}"


def unavailable_reason(exc: BaseException) -> str:
    """A short reason for an outage log line, as safe as `scrubbed_traceback`."""
    return _describe(exc)


# A URL in free text: a scheme, `://`, and everything up to a space, a quote or an angle bracket.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_HIDDEN = "REDACTED"


def redact_url(url: str) -> str:
    """`url` for a log line: its user and password, query and fragment (where receivers put
    their tokens) replaced; scheme, host, port and path kept to tell one URL from another."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:  # not a URL after all (an unbalanced IPv6 bracket, say): nothing of it shown
        return _HIDDEN
    netloc = f"{_HIDDEN}@{host}" if "@" in parts.netloc else host
    query = _HIDDEN if parts.query else ""
    fragment = _HIDDEN if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_urls(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)
