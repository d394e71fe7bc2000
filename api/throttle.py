"""The login and registration limits as resources use them: count, answer X-RateLimit-*, refuse."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import limits
from falcon.asgi import Request, Response

from api.clientaddr import Network, client_address
from chat.domain.ratelimit import Limiter, Verdict
from chat.errors import TooManyRequests


@dataclass(frozen=True, slots=True)
class AddressLimit:
    """A limit per client address; every answer tells the client where it stands."""

    limiter: Limiter
    item: limits.RateLimitItem | None
    trusted: list[Network]
    name: str
    refusal: str

    async def count(self, req: Request, resp: Response) -> None:
        key = client_address(req, self.trusted)
        verdict = await _hit(self.limiter, self.item, self.name, key, self.refusal)
        if verdict is not None:
            resp.set_headers(verdict.headers())


@dataclass(frozen=True, slots=True)
class UserLimit:
    """A limit per signed-in user."""

    limiter: Limiter
    item: limits.RateLimitItem | None
    name: str
    refusal: str

    async def count(self, user_id: object) -> None:
        await _hit(self.limiter, self.item, self.name, str(user_id), self.refusal)


async def _hit(
    limiter: Limiter, item: limits.RateLimitItem | None, name: str, key: str, refusal: str
) -> Verdict | None:
    """Count one for `key`: its verdict, or 429 (with the limit's headers) over the limit."""
    if item is None:
        return None
    verdict = await limiter.hit(item, name, key)
    if not verdict.allowed:
        raise TooManyRequests(refusal, verdict.retry_after, verdict)
    return verdict


@dataclass(frozen=True, slots=True)
class FailureLimit:
    """A limit on failures for one key (a username): over it, even a success must wait.

    Each attempt takes a slot before its outcome is known (`attempt`), in the same atomic step
    that checks the limit, and says how it ended (`Attempt.failed` keeps the slot as a failure,
    `Attempt.passed` frees it). Counting after the outcome let every attempt in flight pass a check
    that none of them had counted yet: a burst of 60 guesses had all 60 checked. Now at most the
    limit's worth ever are. An attempt that finds the slots held by attempts still in flight waits
    for their outcome rather than being refused: they may well succeed (one user's devices logging
    in at once), and a success frees its slot.
    """

    limiter: Limiter
    item: limits.RateLimitItem | None
    name: str
    refusal: str

    async def attempt(self, key: str) -> Attempt:
        """A slot for one attempt, or 429 once the failures (with those in flight) fill the limit."""
        if self.item is None:
            return Attempt(self, key, None)
        waited, delay = 0.0, FIRST_POLL
        while True:
            reservation = await self.limiter.failures.reserve(self.item, self.name, key)
            if reservation.attempt is not None:
                return Attempt(self, key, reservation.attempt)
            if reservation.in_flight == 0 or waited >= MAX_WAIT:
                verdict = reservation.verdict
                raise TooManyRequests(self.refusal, verdict.retry_after, verdict)
            # Their outcome is a password check away; the other replicas' attempts are only in Redis.
            await asyncio.sleep(delay)
            waited, delay = waited + delay, min(delay * 2, LAST_POLL)


# Waiting for attempts in flight (one Argon2 check each, perhaps queued behind others).
FIRST_POLL, LAST_POLL, MAX_WAIT = 0.02, 0.2, 5.0


@dataclass(frozen=True, slots=True)
class Attempt:
    limit: FailureLimit
    key: str
    slot: str | None  # None: the limit is off

    async def failed(self) -> None:
        await self._settle(failed=True)

    async def passed(self) -> None:
        """It did not fail (it succeeded, or never got as far as a check): the slot is free again."""
        await self._settle(failed=False)

    async def _settle(self, *, failed: bool) -> None:
        if self.slot is not None and self.limit.item is not None:
            failures = self.limit.limiter.failures
            await failures.settle(self.limit.item, (self.limit.name, self.key), self.slot, failed=failed)
