"""What every process type does first: logging as operators read it, and the fast event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os

# Collect the youngest generation every 50,000 net allocations instead of 700: a message's trip
# through a process allocates thousands of short-lived objects, and at 700 the collector ran
# several times per message for nothing.
GC_THRESHOLD_0 = 50_000


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # arq logs every job with its arguments at INFO, and here those are message bodies.
    logging.getLogger("arq.worker").setLevel(max(logging.WARNING, logging.getLogger().level))
    # httpx logs every webhook request at INFO with its URL, which may carry the receiver's token.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def use_uvloop() -> None:
    """uvloop where it is installed (it is with uvicorn[standard]); asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def settle_gc() -> None:
    """Called once start-up is done: what exists now (modules, app, pools) lives as long as the
    process, so it goes out of the collector's sight (gc.freeze) instead of being scanned again
    by every full collection, the pauses that show up as tail latency."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_0, second, third)
