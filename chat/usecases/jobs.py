"""Jobs: what became of a queued write, for the user who caused it or an admin; and the admin
check every `/admin/*` route makes."""

from __future__ import annotations

import re
import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from chat.errors import Forbidden, NotFound
from chat.identity.authn import user_gone
from chat.infra.db import Reader, Sessions
from chat.jobqueue.lanes import Queues
from chat.jobqueue.monitor import job_view
from chat.jobqueue.state import JobState, job_state
from chat.models import Message, User


async def admin_flag(db: AsyncConnection | AsyncSession, user_id: uuid.UUID) -> bool | None:
    """Whether the user is an admin; None when there is no such user."""
    return await db.scalar(select(User.is_admin).where(User.id == user_id))


async def require_admin(reader: Reader, user_id: uuid.UUID) -> None:
    """Read from Postgres on every call, so revoking takes effect at once: 403 unless an admin."""
    async with reader.connect() as conn:
        is_admin = await admin_flag(conn, user_id)
    if is_admin is None:
        raise user_gone()
    if not is_admin:
        raise Forbidden("Admins only.")


async def state_for(
    sessions: Sessions, redis: Redis, queues: Queues, me: uuid.UUID | None, job_id: str
) -> dict[str, Any]:
    """The job as `GET /jobs/{id}` shows it; 404 unless `me` caused it or is an admin. `me` None is
    the app's backend (`GET /server/jobs/{id}`), which may see every job."""
    state = await job_state(redis, queues.for_job(job_id), job_id)
    view = job_view(state)
    owner = _owner(state)
    async with sessions() as session:
        is_admin = me is None or bool(await admin_flag(session, me))
        if state.status == "not_found" and job_id.startswith("persist:"):
            # The queue forgot the job (results expire); Postgres still knows it was done, and by whom.
            mid = _message_id(job_id)
            sender = await session.scalar(select(Message.sender_id).where(Message.id == mid)) if mid else None
            if sender is not None:
                owner = str(sender)
                view.update(function="persist_message", status="complete")
    # The app's backend also sees the jobs no user caused (system messages, erasures).
    known = owner is not None or (me is None and state.status != "not_found")
    if not known or (owner != str(me) and not is_admin):
        raise NotFound("No such job.")
    return view


def _owner(state: JobState) -> str | None:
    if not state.args or not isinstance(state.args[0], dict):
        return None
    payload: dict[str, Any] = state.args[0]
    owner = payload.get("sender_id") or payload.get("actor_id")
    return str(owner) if owner else None


def _message_id(job_id: str) -> uuid.UUID | None:
    """The message of a `persist:[<shard tag>]<message id>` job id (`chat.jobqueue.jobs`)."""
    parts = job_id.split(":")
    if len(parts) >= 2:
        try:
            return uuid.UUID(_SHARD_TAG.sub("", parts[1], count=1))
        except ValueError:
            return None
    return None


_SHARD_TAG = re.compile(r"^\{m\d+\}")
