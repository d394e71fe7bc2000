"""`python -m api`: the Procfile's `web` line, serving the REST api on $PORT."""

from __future__ import annotations

import logging
import os

from chat.infra import durability, serving
from chat.infra.process import configure_logging, settings_or_exit, use_uvloop

log = logging.getLogger("api")


def main() -> None:
    # The app's own lines (outages, failures) through the same redacting handler as push and workers.
    configure_logging()
    settings = settings_or_exit()
    durability.report_at_start(settings, log)
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a server process listens on all interfaces
    port = int(os.environ.get("PORT", "8000"))
    config = serving.Config(
        "api.asgi:app",
        header_timeout=settings.http_header_timeout_seconds,
        host=host,
        port=port,
        loop="uvloop",
        # Requests are counted and timed in /metrics; a line per request would only cost CPU.
        access_log=False,
    )
    # Bound here, so that the line below is logged once clients can connect (as push does).
    sock = config.bind_socket()
    sock.listen(config.backlog)  # connections wait in the backlog until the loop serves them
    shown = f"[{host}]" if ":" in host else host
    log.info("api serving http://%s:%d/api/v1 (docs at /docs, dashboard at /api/v1/admin/ui)", shown, port)
    use_uvloop()
    serving.QuietServer(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
