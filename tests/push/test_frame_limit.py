"""The per-socket frame budget, on a clock the test moves."""

from __future__ import annotations

import pytest

from chat.domain import ratelimit
from push.frame_limit import FrameBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(notation: str, clock: Clock) -> FrameBudget:
    item = ratelimit.parse(notation)
    assert item is not None
    return FrameBudget(item, clock=clock)


def test_a_burst_up_to_the_limit_passes_then_it_refills_at_the_rate() -> None:
    clock = Clock()
    frames = budget("20/second", clock)
    assert [frames.take() for _ in range(20)] == [0.0] * 20
    wait = frames.take()
    assert wait == pytest.approx(0.05)  # one frame's worth of the rate
    clock.now += 0.05
    assert frames.take() == 0.0
    assert frames.take() > 0
    clock.now += 60  # idle for a minute: the budget is full again, never more than the limit
    assert [frames.take() for _ in range(20)] == [0.0] * 20
    assert frames.take() > 0


def test_a_slow_limit_says_how_long_to_wait() -> None:
    clock = Clock()
    frames = budget("10/hour", clock)
    for _ in range(10):
        assert frames.take() == 0.0
    assert frames.take() == pytest.approx(360)
    clock.now += 100
    assert frames.take() == pytest.approx(260)


def test_zero_admits_nothing_and_hints_one_period() -> None:
    frames = budget("0/minute", Clock())
    assert frames.take() == 60
