"""The login and registration limits as resources use them: count, answer X-RateLimit-*, refuse."""

from __future__ import annotations

from dataclasses import dataclass

import limits
from falcon.asgi import Request, Response

from api.clientaddr import Network, client_address
from chat.errors import TooManyRequests
from chat.ratelimit import Limiter, Verdict


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
    """A limit on failures for one key (a username): over it, even a success must wait."""

    limiter: Limiter
    item: limits.RateLimitItem | None
    name: str
    refusal: str

    async def check(self, key: str) -> None:
        if self.item is None:
            return
        verdict = await self.limiter.peek(self.item, self.name, key)
        if not verdict.allowed:
            raise TooManyRequests(self.refusal, verdict.retry_after, verdict)

    async def failed(self, key: str) -> None:
        if self.item is not None:
            await self.limiter.hit(self.item, self.name, key)
