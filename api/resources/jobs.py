"""`GET /jobs/{job_id}`: what became of a queued write, for the user who caused it or an admin."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from falcon.asgi import Request, Response
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import current_user
from api.http import send
from chat.arqseam import JobState, job_state
from chat.errors import NotFound
from chat.models import Message, User
from chat.monitor import job_view
from chat.queues import Queues


def _owner(state: JobState) -> str | None:
    if not state.args or not isinstance(state.args[0], dict):
        return None
    payload: dict[str, Any] = state.args[0]
    owner = payload.get("sender_id") or payload.get("actor_id")
    return str(owner) if owner else None


def _message_id(job_id: str) -> uuid.UUID | None:
    parts = job_id.split(":")
    if len(parts) >= 2:
        try:
            return uuid.UUID(parts[1])
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class JobById:
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    queues: Queues

    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        me = current_user(req)
        state = await job_state(self.redis, self.queues.for_job(job_id), job_id)
        view = job_view(state)
        owner = _owner(state)
        async with self.sessions() as session:
            user = await session.get(User, me)
            is_admin = bool(user and user.is_admin)
            if state.status == "not_found" and job_id.startswith("persist:"):
                # The queue forgot the job (results expire); Postgres still knows it was done, and by whom.
                mid = _message_id(job_id)
                persisted = await session.get(Message, mid) if mid else None
                if persisted is not None:
                    owner = str(persisted.sender_id)
                    view.update(function="persist_message", status="complete")
        if owner is None or (owner != str(me) and not is_admin):
            raise NotFound("No such job.")
        send(resp, view)
