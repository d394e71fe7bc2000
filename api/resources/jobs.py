"""`GET /jobs/{job_id}`: what became of a queued write, for the user who caused it or an admin."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from arq.jobs import Job, JobDef, JobResult, JobStatus
from falcon.asgi import Request, Response

from api.auth import current_user
from api.deps import Deps
from api.http import send
from chat.errors import NotFound
from chat.models import Message, User
from chat.redis import deserialize_job

_STATUS = {
    JobStatus.deferred: "queued",  # waiting for its retry back-off
    JobStatus.queued: "queued",
    JobStatus.in_progress: "in_progress",
    JobStatus.complete: "complete",
    JobStatus.not_found: "not_found",
}


def _owner(definition: JobDef | None) -> str | None:
    if definition is None or not definition.args or not isinstance(definition.args[0], dict):
        return None
    payload: dict[str, Any] = definition.args[0]
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


class JobById:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def on_get(self, req: Request, resp: Response, job_id: str) -> None:
        me = current_user(req)
        job = Job(
            job_id,
            self._deps.redis,
            _queue_name=self._deps.settings.queue_name,
            _deserializer=deserialize_job,
        )
        status = await job.status()
        definition = await job.info() if status != JobStatus.not_found else None
        async with self._deps.sessions() as session:
            user = await session.get(User, me)
            is_admin = bool(user and user.is_admin)
            owner = _owner(definition)
            persisted: Message | None = None
            if (
                definition is None
                and (mid := _message_id(job_id)) is not None
                and job_id.startswith("persist:")
            ):
                # The queue forgot the job (results expire); Postgres still knows it was done, and by whom.
                persisted = await session.get(Message, mid)
                owner = str(persisted.sender_id) if persisted else None
        if owner is None or (owner != str(me) and not is_admin):
            raise NotFound("No such job.")

        view: dict[str, Any] = {
            "id": job_id,
            "function": definition.function if definition else "persist_message",
            "status": _STATUS[status],
            "enqueued_at": _time(definition.enqueue_time) if definition else None,
            "started_at": None,
            "finished_at": None,
            "tries": definition.job_try or 0 if definition else 0,
            "error": None,
        }
        if persisted is not None:
            view["status"] = "complete"
        if isinstance(definition, JobResult):
            view["started_at"] = _time(definition.start_time)
            view["finished_at"] = _time(definition.finish_time)
            if not definition.success:
                view["status"] = "failed"
                view["error"] = str(definition.result)
        send(resp, view)


def _time(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value else None
