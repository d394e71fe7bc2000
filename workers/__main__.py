"""`python -m workers`: run one worker process (the Procfile's `worker` line)."""

from __future__ import annotations

import asyncio
import logging
import os

from prometheus_client import start_http_server

from chat.settings import Settings
from workers.main import create_worker


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # arq logs every job with its arguments at INFO, and here those are message bodies.
    logging.getLogger("arq.worker").setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = Settings()
    port = settings.worker_metrics_port or (int(os.environ["PORT"]) if os.environ.get("PORT") else None)
    if port:
        # The worker has no HTTP api of its own; metrics get their own small server.
        start_http_server(port)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    create_worker(settings).run()


if __name__ == "__main__":
    main()
