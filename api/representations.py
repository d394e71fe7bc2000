"""Response shapes of the api that are not users, conversations or messages (those are in
`chat.schemas`, shared with the events): what the OpenAPI document describes them as.

The hot paths build these answers as plain dicts for speed; the schema tests and schemathesis
hold those dicts to these models.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chat.schemas import ConversationOut, MessageOut, UserOut


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenPair(Shape):
    access_token: str = Field(description="A JWT for `Authorization: Bearer`, valid `expires_in` seconds.")
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str = Field(description="Opaque; rotates on every refresh, re-use revokes the login.")


class Accepted(Shape):
    """A queued write: a worker stores it within milliseconds and announces it over the WebSocket."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    status: Literal["queued"]
    job_id: str


class UploadTicket(Shape):
    """Where to send a file's bytes: `PUT` them to `upload_url` with exactly `headers`, before
    `expires_at`; then name `id` in a message's `attachments`."""

    id: uuid.UUID
    upload_url: str = Field(description="A presigned URL: object storage's, or this api's own on local disk.")
    method: Literal["PUT"]
    headers: dict[str, str] = Field(
        description="Content-Type and Content-Length, as the URL's signature binds them."
    )
    expires_at: datetime


class UserPage(Shape):
    items: list[UserOut]
    next_cursor: str | None


class ConversationPage(Shape):
    items: list[ConversationOut]
    next_cursor: str | None


class BlockedUser(Shape):
    user_id: uuid.UUID
    created_at: datetime


class Blocks(Shape):
    items: list[BlockedUser] = Field(description="Newest first.")
    next_cursor: str | None


class Settings(Shape):
    """A participant's own settings for a conversation."""

    muted: bool


class History(Shape):
    items: list[MessageOut] = Field(description="In ascending seq.")
    has_more: bool


class SearchPage(Shape):
    items: list[MessageOut] = Field(description="Best match first; equal ranks newest first.")
    next_cursor: str | None


class JobView(Shape):
    id: str
    function: str | None
    status: Literal["queued", "in_progress", "complete", "failed", "not_found"]
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    tries: int
    error: str | None


class AdminJobView(JobView):
    args: list[Any]
    worker_id: str | None
    traceback: str | None


class FunctionCounts(Shape):
    queued: int
    in_progress: int


class QueueStats(Shape):
    queued: int = Field(description="Due jobs no worker holds.")
    deferred: int = Field(description="Jobs waiting for a retry back-off.")
    in_progress: int
    dead: int
    oldest_queued_age_s: float = Field(description="How long the oldest due job has waited: the latency.")
    workers: int
    functions: dict[str, FunctionCounts]


class QueueMinute(Shape):
    minute: datetime
    complete: int
    failed: int
    retried: int


class QueueHistory(Shape):
    items: list[QueueMinute]


class WorkerLane(Shape):
    queue: str
    max_jobs: int
    running: int


class WorkerRecord(Shape):
    id: str
    host: str
    pid: int
    queue: str
    started_at: datetime
    last_beat_at: datetime
    max_jobs: int = Field(description="Slots for `queue`'s jobs, the message writes.")
    running: int = Field(description="Jobs of `queue` running now.")
    lanes: list[WorkerLane] = Field(
        default=[],
        description="Every queue this worker serves, each with slots of its own (webhook deliveries').",
    )
    done: int
    failed: int
    job_ids: list[str]
    shards: list[int] = Field(
        default=[0], description="The queue shards this worker claims from (WORKER_SHARDS; one Redis: [0])."
    )


class WorkerList(Shape):
    items: list[WorkerRecord]


class DeadLetter(Shape):
    job_id: str
    function: str
    args: list[Any]
    error: str
    reason: str | None = Field(
        None, description="raised, max_tries, timeout, expired, unknown_function or undecodable."
    )
    traceback: str | None = None
    tries: int | None = None
    enqueued_at: datetime | None = None
    failed_at: datetime
    worker_id: str | None = None


class DeadLetterPage(Shape):
    items: list[DeadLetter]
    next_cursor: str | None


class RetryAccepted(Shape):
    job_id: str
    status: Literal["queued"]


class Health(Shape):
    status: Literal["ok"]


class Readiness(Shape):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


class WebhookView(Shape):
    id: uuid.UUID
    url: str
    events: list[str] = Field(description="The event types it receives.")
    secret: str = Field(description="Signs every delivery (`X-Webhook-Signature`).")
    created_at: datetime


class WebhookList(Shape):
    items: list[WebhookView] = Field(description="Oldest first.")


class WebhookDelivery(Shape):
    """The body a webhook receives: one event."""

    id: uuid.UUID = Field(description="The event's id: de-duplicate on it (delivery is at least once).")
    type: str = Field(description="The event type, as on the WebSocket: `message.created` and so on.")
    created_at: datetime = Field(description="When the event was dispatched.")
    data: dict[str, Any] = Field(
        description=(
            "The WebSocket event's `data` (a message, a conversation, `{message_id, emoji, user_id}`, "
            "`{user_id}`, `{user_id, seq}`), plus `conversation_id` where it has none; a "
            "`message.created` adds `offline_recipient_ids`, the recipients with no open WebSocket, "
            "and `recipient_offline`, whether there is any."
        )
    )


class FieldError(Shape):
    field: str = Field(description="body.<name>, query.<name> or path.<name>.")
    message: str


class Problem(Shape):
    """RFC 9457 problem details, the body of every error."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(None, description="On a 422: each invalid field.")
