"""Byte quotas: how many bytes one user may announce per day (`UPLOAD_BYTES_PER_USER_PER_DAY`).

Counted in Redis, shared by every replica, in a window per UTC day. The check and the count are
one script, so concurrent requests cannot all see room and together overshoot: each takes its
bytes only if they fit, or nothing.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

DAY_SECONDS = 86400
KEY_PREFIX = "chat:quota:upload-bytes"

# KEYS: the user's counter for this day. ARGV: bytes wanted, the quota, seconds the key should
# live. Returns {1, used} when they fit (and were counted), {0, used} when they don't.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted, quota = tonumber(ARGV[1]), tonumber(ARGV[2])
if used + wanted > quota then return {0, used} end
used = redis.call('INCRBY', KEYS[1], wanted)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, used}
"""


@dataclass(frozen=True, slots=True)
class Taken:
    allowed: bool
    used: int  # bytes counted today, this request's included when allowed
    retry_after: int  # seconds until the day's window ends


def key(user_id: uuid.UUID | str, day: int) -> str:
    return f"{KEY_PREFIX}:{user_id}:{day}"


class ByteQuota:
    """`take` bytes for a user, within `limit` per UTC day; None or 0 counts nothing."""

    def __init__(self, redis: Redis, limit: int | None) -> None:
        self.limit = limit or None
        self._take = redis.register_script(_TAKE)

    async def take(self, user_id: uuid.UUID | str, amount: int, *, now: float | None = None) -> Taken:
        at = time.time() if now is None else now
        day = int(at // DAY_SECONDS)
        retry_after = max(1, math.ceil((day + 1) * DAY_SECONDS - at))
        if self.limit is None:
            return Taken(True, 0, retry_after)
        # The key outlives its day a little, so a clock a few seconds off never counts twice.
        result = await self._take(keys=[key(user_id, day)], args=[amount, self.limit, retry_after + 60])
        return Taken(bool(int(result[0])), int(result[1]), retry_after)
