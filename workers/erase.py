"""The `erase_user` job: what `chat.usecases.erasure.erase` removes, its events through the job's
publisher (staged in the finishing transaction, with their webhook deliveries)."""

from __future__ import annotations

from typing import Any

from chat.jobqueue.jobs import EraseUser
from chat.usecases.erasure import erase
from workers.context import JobContext
from workers.tasks import job, publisher


@job
async def erase_user(ctx: JobContext, payload: dict[str, Any]) -> str:
    command = EraseUser.model_validate(payload)
    erased = await erase(ctx["sessions"], ctx["redis"], publisher(ctx), ctx["storage"], command.user_id)
    if erased is None:
        return "no such user"
    if erased.nothing:
        return "erased before"
    return (
        f"erased: {len(erased.messages)} messages, {len(erased.reactions)} reactions, "
        f"{len(erased.left)} conversations"
    )
