"""`python -m devserver` (what `make dev` runs): the whole product in one process.

Defaults to SQLite (`./headless-chat.db`) and an in-process Redis (`memory://`), applies the
migrations, then serves the api and the push process side by side with a worker in the same
event loop. With DATABASE_URL / REDIS_URL set it runs the same code against real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import uvicorn
from alembic.config import Config

from alembic import command
from api.app import create_app
from api.problems import RefuseWebSockets
from chat.infra import serving
from chat.infra.process import configure_logging, settings_or_exit
from chat.settings import Settings
from push.server import build_server
from workers.main import create_worker

log = logging.getLogger("devserver")


def migrate(settings: Settings) -> None:
    config = Config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "alembic.ini"))
    config.attributes["settings"] = settings
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


async def serve(settings: Settings, host: str, api_port: int, push_port: int) -> None:
    api = uvicorn.Server(
        # As in production: the project's proxy rule alone, no banner, a deadline on headers.
        serving.Config(
            RefuseWebSockets(create_app(settings)),
            header_timeout=settings.http_header_timeout_seconds,
            host=host,
            port=api_port,
            access_log=False,
            log_level="warning",
        )
    )
    push, push_socket = build_server(settings, host, push_port)
    worker = create_worker(settings, handle_signals=False)
    for server in (api, push):
        # One set of signal handlers for the three parts, installed below.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign, assignment]

    tasks = [
        asyncio.create_task(api.serve(), name="api"),
        asyncio.create_task(push.serve(sockets=[push_socket]), name="push"),
        asyncio.create_task(worker.main(), name="worker"),
    ]

    def stop() -> None:
        api.should_exit = True
        push.should_exit = True
        tasks[2].cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    while not (api.started and push.started):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    print(f"headless-chat dev mode ({settings.database_url}, redis {settings.redis_url})", flush=True)
    base = f"http://{shown_host}:{api_port}"
    print(f"  api:       {base}/api/v1", flush=True)
    print(f"  push:      ws://{shown_host}:{push_port}/ws", flush=True)
    print(f"  docs:      {base}/docs (Swagger UI), {base}/redoc, {base}/openapi.json", flush=True)
    print(f"  dashboard: {base}/api/v1/admin/ui (an admin: headless-chat make-admin NAME)", flush=True)
    # Its Redis lives in this process: `headless-chat jobs ...` in another shell cannot reach it.
    print("  jobs:      the dashboard and /api/v1/admin/* (the jobs CLI needs a real Redis)", flush=True)

    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    await worker.close()
    for task in done:
        if not task.cancelled() and task.exception() is not None and task.get_name() != "worker":
            raise task.exception()  # type: ignore[misc]


def main() -> None:
    configure_logging()
    os.environ.setdefault("ENVIRONMENT", "dev")
    settings = settings_or_exit()
    host = os.environ.get("HOST", "127.0.0.1")
    api_port = int(os.environ.get("API_PORT", os.environ.get("PORT", "8000")))
    push_port = int(os.environ.get("PUSH_PORT", str(api_port + 1)))
    if not settings.public_api_url and not settings.s3_bucket:
        # Attachments on local disk: absolute URLs, so any HTTP client can PUT and GET them as is.
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
        settings = settings.model_copy(update={"public_api_url": f"http://{shown}:{api_port}"})
    migrate(settings)
    asyncio.run(serve(settings, host, api_port, push_port))


if __name__ == "__main__":
    main()
