"""What every process type does first: logging as operators read it, and the fast event loop."""

from __future__ import annotations

import asyncio
import logging
import os


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # arq logs every job with its arguments at INFO, and here those are message bodies.
    logging.getLogger("arq.worker").setLevel(max(logging.WARNING, logging.getLogger().level))


def use_uvloop() -> None:
    """uvloop where it is installed (it is with uvicorn[standard]); asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
