"""Rate limits, shared by every replica through Redis (the `limits` library), in its notation.

Each limit is a setting such as `RATE_LIMIT_LOGIN_PER_USERNAME=10/15minutes`, or `off`. Logins and
registrations go through `Limiter` (a sliding window counter in Redis); the send limit is checked
inside the api's send script, so a send still costs one round trip; the per-socket frame limit is
counted in the push process that owns the socket.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import limits
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

OFF = "off"


def parse(value: str | None) -> limits.RateLimitItem | None:
    """`N/second|minute|hour|...` (also `N/15minutes`) as a limit, or None for `off`."""
    if value is None or value.strip().lower() == OFF:
        return None
    return limits.parse(value)


def validate(value: str) -> str:
    """For settings: refuse what `limits` cannot read, naming the notation."""
    try:
        parse(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate limit: use N/second, N/minute, N/hour or 'off'") from exc
    return value


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix seconds when the window frees up

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-*` as documented in docs/api.md."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


class Limiter:
    def __init__(self, redis: Redis, redis_url: str) -> None:
        storage: Storage
        if redis_url.startswith("memory://"):
            # Dev mode runs every process in one, so an in-process store is shared by all of them.
            storage = MemoryStorage()
        else:
            # On the process's own connection pool: closed with it, no second set of connections.
            storage = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix="chat:limits",
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # passed through
            )
        self._storage = storage
        self._strategy = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, item: limits.RateLimitItem, *identifiers: str) -> Verdict:
        """Count one and say whether it was within the limit."""
        allowed = await self._strategy.hit(item, *identifiers)
        return await self._verdict(item, allowed, identifiers)

    async def peek(self, item: limits.RateLimitItem, *identifiers: str) -> Verdict:
        """Whether one more would be within the limit, without counting it."""
        allowed = await self._strategy.test(item, *identifiers)
        return await self._verdict(item, allowed, identifiers)

    async def _verdict(
        self, item: limits.RateLimitItem, allowed: bool, identifiers: tuple[str, ...]
    ) -> Verdict:
        stats = await self._strategy.get_window_stats(item, *identifiers)
        return Verdict(allowed, item.amount, stats.remaining, stats.reset_time)
