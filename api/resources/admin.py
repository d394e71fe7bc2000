"""`/admin/*`: the job queue, workers and dead letters, for admins (`headless-chat make-admin`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from falcon.asgi import Request, Response
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth import current_user
from api.http import limit_param, query_int, send
from chat import arqseam, deadletters, heartbeats, jobstats, monitor
from chat.errors import Conflict, Forbidden, NotFound, Unauthorized, field_error
from chat.models import User
from chat.queues import Queues


@dataclass(frozen=True, slots=True)
class AdminOnly:
    """Every admin route checks the caller's admin flag in Postgres, so revoking takes effect at once."""

    reader: AsyncEngine
    redis: Redis
    queues: Queues

    async def _require_admin(self, req: Request) -> None:
        async with self.reader.connect() as conn:
            is_admin = await conn.scalar(select(User.is_admin).where(User.id == current_user(req)))
        if is_admin is None:
            raise Unauthorized("The user of this token no longer exists.", invalid_token=True)
        if not is_admin:
            raise Forbidden("Admins only.")


@dataclass(frozen=True, slots=True)
class Queue(AdminOnly):
    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        send(resp, await monitor.queue_counts(self.redis, self.queues.all, by_function=True))


@dataclass(frozen=True, slots=True)
class QueueHistory(AdminOnly):
    """Jobs finished, failed and retried per minute, oldest first: the dashboard's chart."""

    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        minutes = query_int(req, "minutes", default=60, lo=1, hi=120)
        send(resp, {"items": await jobstats.history(self.redis, self.queues.messages, minutes)})


@dataclass(frozen=True, slots=True)
class Workers(AdminOnly):
    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        workers = await heartbeats.live(self.redis)
        send(resp, {"items": sorted(workers, key=lambda w: w["started_at"])})


@dataclass(frozen=True, slots=True)
class DeadLetters(AdminOnly):
    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        limit = limit_param(req)
        try:
            items, cursor = await deadletters.page(
                self.redis, limit=limit, cursor=req.get_param("cursor"), function=req.get_param("function")
            )
        except ValueError:
            raise field_error("query.cursor", "Not a cursor this endpoint issued.") from None
        send(resp, {"items": items, "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class DeadLetter(AdminOnly):
    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        send(resp, await _dead_letter(self.redis, job_id))

    async def on_delete(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        if not await deadletters.discard(self.redis, job_id):
            raise NotFound("No such dead letter.")
        resp.status = 204


@dataclass(frozen=True, slots=True)
class DeadLetterRetry(AdminOnly):
    async def on_post(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        entry = await _dead_letter(self.redis, job_id)
        done = await arqseam.requeue_dead_letter(
            self.redis, self.queues.for_function(entry["function"]), entry
        )
        if done == -1:
            raise NotFound("No such dead letter.")
        if done == 0:
            raise Conflict("This job is queued or running again already.")
        resp.set_header("Location", f"/api/v1/admin/jobs/{job_id}")
        send(resp, {"job_id": job_id, "status": "queued"}, 202)


async def _dead_letter(redis: Redis, job_id: str) -> dict[str, Any]:
    entry = await deadletters.get(redis, job_id)
    if entry is None:
        raise NotFound("No such dead letter.")
    return entry


@dataclass(frozen=True, slots=True)
class AdminJob(AdminOnly):
    """Any job: the `/jobs` fields plus its args, the worker that ran it and its traceback."""

    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        view = await monitor.job_detail(self.redis, self.queues.for_job(job_id), job_id)
        if view is None:
            raise NotFound("No such job.")
        send(resp, view)
