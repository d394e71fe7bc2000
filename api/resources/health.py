"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from falcon.asgi import Request, Response
from sqlalchemy import text

from api.deps import Deps
from api.http import send


class Health:
    auth_required = False

    async def on_get(self, req: Request, resp: Response) -> None:
        send(resp, {"status": "ok"})


class Ready:
    """Ready only when both Postgres and Redis answer within a second."""

    auth_required = False

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def on_get(self, req: Request, resp: Response) -> None:
        database, redis = await asyncio.gather(self._database(), self._redis())
        checks = {"database": database, "redis": redis}
        ready = all(v == "ok" for v in checks.values())
        send(resp, {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    async def _database(self) -> str:
        try:
            async with asyncio.timeout(1):
                async with self._deps.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok"

    async def _redis(self) -> str:
        try:
            async with asyncio.timeout(1):
                await self._deps.redis.ping()
        except Exception as exc:
            return f"error: {type(exc).__name__}"
        return "ok"
