"""uvicorn's server for the web and push processes, minus its ten wake-ups a second.

uvicorn's main loop sleeps 0.1 s between checks for a shutdown and the Date header's refresh:
measured at 0.2 % of a core per process with nothing to do, the bulk of an idle deployment's CPU.
Here the loop wakes once a second (the Date header has one-second resolution anyway) and at once
on a shutdown signal.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_SECONDS = 1.0
# uvicorn refreshes the Date header on ticks whose counter is a multiple of ten: every tick here.
_COUNTER_STEP = 10


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._exit is not None:
            # A signal handler may run in the middle of the loop's own work: threadsafe is the safe way in.
            self._loop.call_soon_threadsafe(self._exit.set)

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + _COUNTER_STEP) % 864_000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_SECONDS):
                    await self._exit.wait()
