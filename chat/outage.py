"""Riding out a dependency that went away: back off, log the outage once, log the recovery once."""

from __future__ import annotations

import logging
import random
import time

from chat.failures import is_database_error, unavailable, unavailable_reason


class Backoff:
    """0.1 s doubling up to `cap`, with jitter so that many processes don't reconnect in step."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self._first


class Outage:
    """One warning when `what` stops answering and one when it is back, however many calls fail."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._since: float | None = None

    @property
    def down_since(self) -> float | None:
        return self._since

    def down(self, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning("%s is unreachable (%s); retrying until it is back", self._what, exc)

    def up(self) -> None:
        if self._since is not None:
            self._log.warning(
                "%s is reachable again after %.1f s", self._what, time.monotonic() - self._since
            )
            self._since = None


class Outages:
    """One Outage per dependency, named by chat.failures: which are away, since when."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._by_dependency: dict[str, Outage] = {}

    def down(self, exc: BaseException) -> None:
        what = unavailable(exc) or "a dependency"
        outage = self._by_dependency.setdefault(what, Outage(self._log, what[0].upper() + what[1:]))
        outage.down(_Summary(exc) if is_database_error(exc) else exc)

    def up(self) -> None:
        for outage in self._by_dependency.values():
            outage.up()


class _Summary(Exception):
    """A database error for a log line: its SQLSTATE and statement, never its parameters."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(unavailable_reason(exc))
