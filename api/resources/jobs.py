"""`GET /jobs/{job_id}`: what became of a queued write, for the user who caused it or an admin."""

from __future__ import annotations

from dataclasses import dataclass

from falcon.asgi import Request, Response
from redis.asyncio import Redis

from api.auth import current_user
from api.http import send
from chat.infra.db import Sessions
from chat.jobqueue.lanes import Queues
from chat.usecases import jobs


@dataclass(frozen=True, slots=True)
class JobById:
    sessions: Sessions
    redis: Redis
    queues: Queues

    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        send(resp, await jobs.state_for(self.sessions, self.redis, self.queues, current_user(req), job_id))
