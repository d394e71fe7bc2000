"""`python -m push`: the Procfile's `push` line, serving WebSockets on $PORT."""

from __future__ import annotations

import asyncio
import logging
import os

from chat.infra import durability
from chat.infra.process import configure_logging, settings_or_exit, settle_gc, use_uvloop
from push.server import build_server

log = logging.getLogger("push")


def main() -> None:
    configure_logging()
    settings = settings_or_exit()
    durability.report_at_start(settings, log)
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a server process listens on all interfaces
    port = int(os.environ.get("PORT", "8001"))
    server, sock = build_server(settings, host, port)
    # uvicorn runs quiet here (its access log would print tokens), so say where clients connect.
    shown = f"[{host}]" if ":" in host else host
    log.info("push serving ws://%s:%d/ws (and /healthz, /readyz, /metrics)", shown, port)
    use_uvloop()
    settle_gc()
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
