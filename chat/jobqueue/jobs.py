"""The job contract between the api (producer) and the workers (consumer).

Job ids are derived from message ids, so re-sending a message while its first job is queued
enqueues nothing (arq refuses a second job with the same id).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from arq import Retry
from pydantic import BaseModel, ConfigDict

# Raised by a job to run again later (`Retry(defer=seconds)`); arq's, so that the runtime knows it.
__all__ = ["Retry"]

PERSIST_MESSAGE = "persist_message"
EDIT_MESSAGE = "edit_message"
DELETE_MESSAGE = "delete_message"
REACT = "react"
ERASE_USER = "erase_user"


class JobPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class PersistMessage(JobPayload):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    # None for a system message (the app's backend posted it; no user sent it).
    sender_id: uuid.UUID | None
    seq: int
    body: str
    client_id: str | None
    created_at: datetime
    client_digest: str | None = None
    reply_to: uuid.UUID | None = None
    # Upload ids, in the sender's order; the api claimed them for this message, the worker checks
    # their objects are stored before it stores the message.
    attachments: tuple[uuid.UUID, ...] = ()
    kind: Literal["user", "system"] = "user"

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        if not self.attachments:
            # Left out when empty: workers from before attachments (extra="forbid") keep taking
            # sends without files during a rolling deploy.
            del data["attachments"]
        if self.kind == "user":
            del data["kind"]  # likewise: only system messages need a worker that knows kinds
        return data


class EditMessage(JobPayload):
    message_id: uuid.UUID
    actor_id: uuid.UUID
    body: str
    edited_at: datetime


class DeleteMessage(JobPayload):
    message_id: uuid.UUID
    actor_id: uuid.UUID
    deleted_at: datetime


class React(JobPayload):
    """Add (`present`) or remove one user's emoji on a message, as of `changed_at`."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    emoji: str
    present: bool
    changed_at: datetime


class EraseUser(JobPayload):
    """Erase what a user left behind (`chat.usecases.erasure`); running it again changes nothing."""

    user_id: uuid.UUID


# `tag` in each id: the queue shard's hash tag (`chat.jobqueue.shards`), which puts the job's keys
# in the slot of the queue that carries it; "" on one Redis.


def erase_job_id(user_id: uuid.UUID, tag: str) -> str:
    # One id per user: asking again while the job is queued, running or kept enqueues nothing.
    return f"erase:{tag}{user_id}"


def persist_job_id(message_id: uuid.UUID, tag: str) -> str:
    return f"persist:{tag}{message_id}"


def change_job_id(kind: str, message_id: uuid.UUID, tag: str) -> str:
    # Every edit or delete is its own job; the random part keeps two edits from merging.
    return f"{kind}:{tag}{message_id}:{uuid.uuid4().hex[:12]}"
