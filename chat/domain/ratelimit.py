"""Rate limits, shared by every replica through Redis (the `limits` library), in its notation.

Each limit is a setting such as `RATE_LIMIT_LOGIN_PER_USERNAME=10/15minutes`, or `off`. Logins and
registrations go through `Limiter` (a sliding window counter in Redis), failed logins per username
through `FailureWindow` (a slot is taken before the password is checked); the send limit is checked
inside the api's send script, so a send still costs one round trip; the per-socket frame limit is
counted in the push process that owns the socket.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

import limits
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
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
    def __init__(self, redis: Redis, redis_url: str, *, cluster: bool = False) -> None:
        storage: Storage
        if redis_url.startswith("memory://"):
            # Dev mode runs every process in one, so an in-process store is shared by all of them.
            storage = MemoryStorage()
        elif cluster:
            # Its own cluster client: `limits` keeps each window's keys in one slot by hash tag.
            storage = RedisClusterStorage(
                "async+redis+cluster://" + redis_url.split("://", 1)[1].split("/", 1)[0],
                implementation="redispy",
                key_prefix="chat:limits",
            )
        else:
            # On the process's own connection pool: closed with it, no second set of connections.
            storage = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix="chat:limits",  # FailureWindow keeps its keys under it too
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # passed through
            )
        # The cluster client `limits` made for itself, to close with the process's own.
        self._own_client = getattr(getattr(storage, "bridge", None), "storage", None) if cluster else None
        self._storage = storage
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self.failures = FailureWindow(redis)

    async def aclose(self) -> None:
        if self._own_client is not None:
            await self._own_client.aclose()

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


# KEYS: the failures (a sorted set scored by when each failed) and the attempts in flight (scored
# by when their slot lapses, should their process die before it says how they ended).
# ARGV: now (ms), the window (ms), the limit, this attempt's id, how long a slot may be held (ms).
# Reply: {1, remaining} with a slot taken, or {0, attempts in flight, when the oldest failure leaves}.
_RESERVE = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('zremrangebyscore', KEYS[1], '-inf', now - window)
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
local failed, pending = redis.call('zcard', KEYS[1]), redis.call('zcard', KEYS[2])
if failed + pending < limit then
    redis.call('zadd', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
    redis.call('pexpire', KEYS[2], tonumber(ARGV[5]))
    return {1, limit - failed - pending - 1}
end
local oldest = redis.call('zrange', KEYS[1], 0, 0, 'WITHSCORES')
local frees_at = now
if oldest[2] then frees_at = tonumber(oldest[2]) + window end
return {0, pending, frees_at}
"""

# KEYS as above; ARGV: now (ms), the window (ms), the attempt's id, 1 when it failed.
_SETTLE = """
redis.call('zrem', KEYS[2], ARGV[3])
if ARGV[4] == '1' then
    redis.call('zadd', KEYS[1], tonumber(ARGV[1]), ARGV[3])
    redis.call('pexpire', KEYS[1], tonumber(ARGV[2]))
end
return 0
"""

# Longest an attempt may hold its slot before it lapses (a process that died mid-login).
SLOT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Reservation:
    """One attempt's slot, or why there is none."""

    verdict: Verdict
    attempt: str | None  # None: refused
    in_flight: int  # when refused: attempts still holding a slot, whose outcome may free one


class FailureWindow:
    """At most `limit` failures in a moving window, where an attempt in flight counts as one.

    Each attempt takes a slot before its outcome is known, in the same atomic step that checks the
    limit, and `settle` keeps it as a failure or frees it. So no more than `limit` outcomes are
    ever learnt in a window, however many attempts arrive at once: one that finds every slot taken
    is refused without being tried. A sorted set of failures, not `limits`' counter, because a
    slot must be given back exactly. Works on the dev mode's fake Redis too (it runs Lua).
    """

    def __init__(self, redis: Redis, prefix: str = "chat:limits:failures") -> None:
        self._prefix = prefix
        self._reserve = redis.register_script(_RESERVE)
        self._settle = redis.register_script(_SETTLE)

    def _keys(self, item: limits.RateLimitItem, identifiers: tuple[str, ...]) -> list[str]:
        key = f"{self._prefix}:{{{item.key_for(*identifiers)}}}"
        return [f"{key}:failed", f"{key}:pending"]

    async def reserve(self, item: limits.RateLimitItem, *identifiers: str) -> Reservation:
        now_ms = int(time.time() * 1000)
        window_ms = item.get_expiry() * 1000
        attempt = uuid.uuid4().hex
        reply = await self._reserve(
            keys=self._keys(item, identifiers),
            args=[now_ms, window_ms, item.amount, attempt, SLOT_SECONDS * 1000],
        )
        if int(reply[0]) == 1:
            verdict = Verdict(True, item.amount, int(reply[1]), (now_ms + window_ms) / 1000)
            return Reservation(verdict, attempt, 0)
        in_flight, frees_at_ms = int(reply[1]), int(reply[2])
        # Refused for attempts in flight alone, the wait is theirs: a second, not the window.
        reset_at = frees_at_ms / 1000 if frees_at_ms > now_ms else time.time() + 1
        return Reservation(Verdict(False, item.amount, 0, reset_at), None, in_flight)

    async def settle(
        self, item: limits.RateLimitItem, identifiers: tuple[str, ...], attempt: str, *, failed: bool
    ) -> None:
        """Keep the attempt's slot as a failure, or free it."""
        await self._settle(
            keys=self._keys(item, identifiers),
            args=[int(time.time() * 1000), item.get_expiry() * 1000, attempt, 1 if failed else 0],
        )
