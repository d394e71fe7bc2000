"""One read for the asks of one event-loop turn: `SharedReads(read).get(key)`.

Many callers asking the database the same kind of question at once (a burst of requests, a burst of
reconnecting sockets) share one `WHERE … IN (…)` read on one connection instead of taking a
connection each. A caller only ever joins a read that has not been sent yet: what it is told was
true after it arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    def __init__(self, read: Callable[[set[K]], Awaitable[dict[K, V]]]) -> None:
        self._read_many = read
        self._open: tuple[set[K], asyncio.Future[dict[K, V]]] | None = None
        # The event loop keeps only weak references to tasks: a read in flight is held here.
        self._reading: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        """The answer for `key`; `read` must answer every key it was asked."""
        if self._open is None:
            future: asyncio.Future[dict[K, V]] = asyncio.get_running_loop().create_future()
            # Whoever stops waiting (a timeout), the outcome is still taken: no "never retrieved".
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._open = (set(), future)
            task = asyncio.create_task(self._read(self._open))
            self._reading.add(task)
            task.add_done_callback(self._reading.discard)
        wanted, outcome = self._open
        wanted.add(key)
        # Shielded: one waiter's timeout must not cancel the read the others wait for.
        return (await asyncio.shield(outcome))[key]

    async def _read(self, batch: tuple[set[K], asyncio.Future[dict[K, V]]]) -> None:
        await asyncio.sleep(0)  # the rest of this turn's asks join
        if self._open is batch:
            self._open = None  # sent from here on: later asks open the next read
        wanted, outcome = batch
        try:
            result = await self._read_many(wanted)
        except Exception as exc:
            outcome.set_exception(exc)
        else:
            outcome.set_result(result)
