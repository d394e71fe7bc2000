"""`python -m api`: the Procfile's `web` line, serving the REST api on $PORT."""

from __future__ import annotations

import os

import uvicorn

from chat.process import use_uvloop
from chat.serving import QuietServer


def main() -> None:
    config = uvicorn.Config(
        "api.asgi:app",
        host=os.environ.get("HOST", "0.0.0.0"),  # noqa: S104 - a server process listens on all interfaces
        port=int(os.environ.get("PORT", "8000")),
        loop="uvloop",
        http="httptools",
        # Requests are counted and timed in /metrics; a line per request would only cost CPU.
        access_log=False,
        # No `server: uvicorn` banner: it only tells a scanner which CVEs to try.
        server_header=False,
    )
    use_uvloop()
    QuietServer(config).run()


if __name__ == "__main__":
    main()
