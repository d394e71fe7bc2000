"""A clock a test moves forward: real time plus an offset, patched into just the modules whose
`time.time()` or `datetime.now()` decide an expiry, so a test of an expiry waits for nothing."""

from __future__ import annotations

import time
import types
from datetime import datetime, timedelta, tzinfo
from typing import Any

import pytest


class _SameInstances(type):
    # The stand-in datetime class still answers isinstance() for every real datetime, as code
    # that converts datetimes (PyJWT's encode, for one) asks.
    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, datetime)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, datetime)


class Clock:
    """Real time plus `offset` seconds, once patched into a module with `patch_time` (its
    `import time`) or `patch_datetime` (its `from datetime import datetime`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def time(self) -> float:
        return time.time() + self.offset

    def now(self, tz: tzinfo | None = None) -> datetime:
        return datetime.now(tz) + timedelta(seconds=self.offset)

    def patch_time(self, module: types.ModuleType) -> None:
        shifted = types.ModuleType("time")
        shifted.__dict__.update(vars(time))
        shifted.time = self.time  # type: ignore[attr-defined]
        self._monkeypatch.setattr(module, "time", shifted)

    def patch_datetime(self, module: types.ModuleType) -> None:
        clock = self

        class Shifted(datetime, metaclass=_SameInstances):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
                return clock.now(tz)

        self._monkeypatch.setattr(module, "datetime", Shifted)
