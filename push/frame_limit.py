"""How many frames one WebSocket client may send: `RATE_LIMIT_CLIENT_FRAMES`, counted per socket.

The socket lives in one push process, so its count does too: no Redis round trip per frame, and
nothing to clean up when the socket closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limits import RateLimitItem


class FrameBudget:
    """A token bucket: `N/period` lets a burst of N through, then N per period on average.

    Constant memory whatever the notation says (a log of timestamps would hold N of them), and
    the wait until the next frame may pass falls out of the arithmetic as the retry hint.
    """

    def __init__(self, limit: RateLimitItem, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(limit.amount)
        self._period = float(limit.get_expiry())
        self._rate = limit.amount / self._period  # frames per second
        self._tokens = self._capacity
        self._clock = clock
        self._at = clock()

    def take(self) -> float:
        """Count one frame: 0 when it may pass, else the seconds until one would (nothing counted)."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1 - 1e-9:  # refills are float sums; exactly on time must pass
            self._tokens -= 1
            return 0.0
        # `0/second` admits nothing; its hint is one period rather than a division by zero.
        return (1 - self._tokens) / self._rate if self._rate else self._period
