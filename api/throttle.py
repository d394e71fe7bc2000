"""The login and registration limits as resources use them: count, answer X-RateLimit-*, refuse."""

from __future__ import annotations

import limits
from falcon.asgi import Request, Response

from api.clientaddr import Network, client_address
from chat.errors import TooManyRequests
from chat.ratelimit import Limiter


class AddressLimit:
    """A limit per client address; every answer tells the client where it stands."""

    def __init__(
        self,
        limiter: Limiter,
        item: limits.RateLimitItem | None,
        trusted: list[Network],
        *,
        name: str,
        refusal: str,
    ) -> None:
        self._limiter = limiter
        self._item = item
        self._trusted = trusted
        self._name = name
        self._refusal = refusal

    async def count(self, req: Request, resp: Response) -> None:
        if self._item is None:
            return
        verdict = await self._limiter.hit(self._item, self._name, client_address(req, self._trusted))
        resp.set_headers(verdict.headers())
        if not verdict.allowed:
            raise TooManyRequests(self._refusal, verdict.retry_after, verdict)


class FailureLimit:
    """A limit on failures for one key (a username): over it, even a success must wait."""

    def __init__(
        self, limiter: Limiter, item: limits.RateLimitItem | None, *, name: str, refusal: str
    ) -> None:
        self._limiter = limiter
        self._item = item
        self._name = name
        self._refusal = refusal

    async def check(self, key: str) -> None:
        if self._item is None:
            return
        verdict = await self._limiter.peek(self._item, self._name, key)
        if not verdict.allowed:
            raise TooManyRequests(self._refusal, verdict.retry_after, verdict)

    async def failed(self, key: str) -> None:
        if self._item is not None:
            await self._limiter.hit(self._item, self._name, key)
