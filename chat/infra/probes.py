"""`/healthz`, `/readyz` and `/metrics`: one implementation for the api and the push process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from falcon.asgi import Request, Response
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from chat.infra import metrics

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

Check = Callable[[], Awaitable[object]]
JSON = "application/json; charset=utf-8"
# A probe that hangs is a probe that fails: orchestrators give up after a few seconds anyway.
CHECK_TIMEOUT_SECONDS = 1.0
PROBE_KEY = "chat:readyz"
PROBE_KEY_MS = 60_000


class Liveness:
    """The process runs and serves requests; says nothing about its dependencies."""

    auth_required = False

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = JSON
        resp.data = b'{"status":"ok"}'


class Readiness:
    """Ready when every dependency of this process answers within a second; 503 names those that don't."""

    auth_required = False

    def __init__(self, checks: dict[str, Check]) -> None:
        self._checks = checks

    async def on_get(self, req: Request, resp: Response) -> None:
        checks = await self.check()
        ready = all(result == "ok" for result in checks.values())
        resp.status = 200 if ready else 503
        resp.content_type = JSON
        resp.data = orjson.dumps({"status": "ok" if ready else "unavailable", "checks": checks})

    async def check(self) -> dict[str, str]:
        """Each dependency's verdict (`ok`, `full`, `error: <type>`), also set as chat_dependency_up."""
        results = await asyncio.gather(*(self._run(check) for check in self._checks.values()))
        checks = dict(zip(self._checks, results, strict=True))
        for name, result in checks.items():
            metrics.DEPENDENCY_UP.labels(name).set(1 if result == "ok" else 0)
        return checks

    @staticmethod
    async def _run(check: Check) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await check()
        except OutOfMemoryError:
            # Answers reads but refuses every write: sends, typing and rate limits answer 503.
            return "full"
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok"


def database(engine: AsyncEngine) -> Check:
    # Imported here: the push process serves these probes too and never loads SQLAlchemy.
    from sqlalchemy import text

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def redis(client: Redis) -> Check:
    """Redis answers and takes writes: a PING alone passes while maxmemory is reached under
    `noeviction`, when every write is refused. One small key, overwritten by every probe."""

    async def check() -> None:
        await client.set(PROBE_KEY, b"1", px=PROBE_KEY_MS)

    return check


class Metrics:
    """The process's metrics; with `readiness`, its dependencies checked first, so that a scrape
    shows whether Postgres and Redis answer now (chat_dependency_up), not when /readyz last ran."""

    auth_required = False

    def __init__(self, readiness: Readiness | None = None) -> None:
        self._readiness = readiness

    async def on_get(self, req: Request, resp: Response) -> None:
        if self._readiness is not None:
            await self._readiness.check()
        resp.content_type = metrics.CONTENT_TYPE
        resp.data = metrics.render()
