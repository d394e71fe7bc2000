"""Riding out a dependency that went away: back off, log the outage once, log the recovery once."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

import redis.exceptions

from chat.infra.failures import scrubbed_traceback, unavailable, unavailable_reason


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
        self._refused = False  # down because it refused (or a defect), not because it was away

    @property
    def down_since(self) -> float | None:
        return self._since

    def down(self, exc: BaseException) -> None:
        if self._since is not None:
            return
        self._since = time.monotonic()
        self._refused = unavailable(exc) is None
        reason = f"{type(exc).__name__}: {unavailable_reason(exc)}"  # no SQL parameters, no job bodies
        if not self._refused:
            self._log.warning("%s is unreachable (%s); retrying until it is back", self._what, reason)
        elif isinstance(exc, redis.exceptions.RedisError):
            # Reachable but refusing: a script's error, a replica that is read-only.
            self._log.warning("%s failed (%s); retrying until it works", self._what, reason)
        else:  # a defect: its traceback, once
            self._log.error("%s failed; retrying until it works\n%s", self._what, scrubbed_traceback(exc))

    def up(self) -> None:
        if self._since is not None:
            self._log.warning(
                "%s %s again after %.1f s",
                self._what,
                "works" if self._refused else "is reachable",
                time.monotonic() - self._since,
            )
            self._since = None


async def keep_running(
    step: Callable[[], Awaitable[object]], every: float, outage: Outage, *, wait_first: bool = False
) -> None:
    """Run `step` every `every` seconds until cancelled, whatever it raises.

    The one way a background loop (a heartbeat, gauges, a sweep) meets errors: one that escaped
    would end the task silently, and whatever it kept alive with it, until the process restarts.
    Redis out of memory, a script's error, a lost connection and a defect alike are logged by
    `outage`, once when the step starts failing and once when it works again.
    """
    if wait_first:
        await asyncio.sleep(every)
    while True:
        try:
            await step()
        except Exception as exc:  # CancelledError is not an Exception: cancelling still stops it
            outage.down(exc)
        else:
            outage.up()
        await asyncio.sleep(every)


class Outages:
    """One Outage per dependency, named by chat.infra.failures: which are away, since when."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._by_dependency: dict[str, Outage] = {}

    def down(self, exc: BaseException) -> None:
        what = unavailable(exc) or "a dependency"
        outage = self._by_dependency.setdefault(what, Outage(self._log, what[0].upper() + what[1:]))
        outage.down(exc)  # its log line says no more of a database error than its SQLSTATE

    def up(self) -> None:
        for outage in self._by_dependency.values():
            outage.up()
