"""`/admin/*`: the job queue, workers and dead letters, for admins (`headless-chat make-admin`)."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from redis.asyncio import Redis

from api.auth import current_user
from api.http import limit_param, query_int, send
from chat.errors import NotFound
from chat.infra.db import Reader
from chat.jobqueue import heartbeats, jobstats, monitor
from chat.jobqueue.lanes import Queues
from chat.usecases import deadletters
from chat.usecases.jobs import require_admin


@dataclass(frozen=True, slots=True)
class AdminOnly:
    """Every admin route checks the caller's admin flag in Postgres, so revoking takes effect at once."""

    reader: Reader
    redis: Redis
    queues: Queues

    async def _require_admin(self, req: Request) -> None:
        await require_admin(self.reader, current_user(req))


@dataclass(frozen=True, slots=True)
class Queue(AdminOnly):
    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        send(resp, await monitor.queue_counts(self.redis, self.queues.every, by_function=True))


@dataclass(frozen=True, slots=True)
class QueueHistory(AdminOnly):
    """Jobs finished, failed and retried per minute, oldest first: the dashboard's chart."""

    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        minutes = query_int(req, "minutes", default=60, lo=1, hi=120)
        lane = self.queues.shard_queues(self.queues.messages)
        send(resp, {"items": await jobstats.history(self.redis, lane, minutes)})


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
        items, cursor = await deadletters.page(
            self.redis, limit=limit, cursor=req.get_param("cursor"), function=req.get_param("function")
        )
        send(resp, {"items": items, "next_cursor": cursor})


@dataclass(frozen=True, slots=True)
class DeadLetter(AdminOnly):
    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        send(resp, await deadletters.show(self.redis, job_id))

    async def on_delete(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        await deadletters.discard(self.redis, job_id)
        resp.status = 204


@dataclass(frozen=True, slots=True)
class DeadLetterRetry(AdminOnly):
    async def on_post(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        await deadletters.retry(self.redis, self.queues, job_id)
        resp.set_header("Location", f"/api/v1/admin/jobs/{job_id}")
        send(resp, {"job_id": job_id, "status": "queued"}, 202)


@dataclass(frozen=True, slots=True)
class AdminJob(AdminOnly):
    """Any job: the `/jobs` fields plus its args, the worker that ran it and its traceback."""

    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        await self._require_admin(req)
        view = await monitor.job_detail(self.redis, self.queues.for_job(job_id), job_id)
        if view is None:
            raise NotFound("No such job.")
        send(resp, view)
