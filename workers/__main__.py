"""`python -m workers`: run one worker process (the Procfile's `worker` line)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os

from prometheus_client import start_http_server

from chat.process import configure_logging, settle_gc, use_uvloop
from chat.settings import Settings
from workers.main import create_worker

log = logging.getLogger("workers")

# How many ports from the first one a worker tries before it goes without metrics: room for every
# worker one host runs, well short of the next process type's ports under honcho (100 apart).
METRICS_PORT_TRIES = 50


def serve_metrics(first: int) -> int | None:
    """Serve /metrics on the first free port from `first` on; that port, or None if none was free.

    Several workers on one host may be given one port (`WORKER_METRICS_PORT=9105 honcho start -c
    worker=3 worker`): each takes the next free one, and none dies because another got there first.
    """
    last = min(first + METRICS_PORT_TRIES, 65536) - 1
    for port in range(first, last + 1):
        try:
            # The worker has no HTTP api of its own; metrics get their own small server.
            start_http_server(port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise  # not a busy port but a setting to fix (a privileged port, say): say so at once
            continue
        skipped = "" if port == first else f" (the first free port from {first})"
        log.info("worker metrics on http://0.0.0.0:%d/metrics%s", port, skipped)
        return port
    log.warning("ports %d-%d are all taken: this worker serves no metrics", first, last)
    return None


def main() -> None:
    configure_logging()
    settings = Settings()
    port = settings.worker_metrics_port or (int(os.environ["PORT"]) if os.environ.get("PORT") else None)
    if port:
        serve_metrics(port)
    use_uvloop()
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = create_worker(settings)
    settle_gc()
    worker.run()


if __name__ == "__main__":
    main()
