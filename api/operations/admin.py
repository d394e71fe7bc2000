"""Jobs: a user's queued writes, and the operator's view of the queue, its workers, its dead
letters and its webhooks."""

from __future__ import annotations

from typing import Any

from api import representations as r
from api.operations.base import CURSOR, LIMIT, NO_CONTENT, Operation, Param, Reply
from api.resources import admin, admin_ui, jobs, webhooks

TAG = "admin"
DEAD = "/admin/dead-letters/{job_id}"
WEBHOOK = "/admin/webhooks/{webhook_id}"


def _admin(
    method: str, path: str, resource: type[Any], summary: str, ok: Reply, status: int = 200, **more: Any
) -> Operation:
    return Operation(method, path, resource, TAG, summary, "admin", {status: ok}, **more)


OPERATIONS = (
    Operation(
        "GET",
        "/jobs/{job_id}",
        jobs.JobById,
        "jobs",
        "What became of a queued write",
        "job",
        {200: ("The job.", r.JobView)},
    ),
    _admin("GET", "/admin/queue", admin.Queue, "The queue", ("Counts.", r.QueueStats)),
    _admin(
        "GET",
        "/admin/queue/history",
        admin.QueueHistory,
        "Jobs finished per minute",
        ("Oldest first.", r.QueueHistory),
        query=(
            Param("minutes", {"type": "integer", "minimum": 1, "maximum": 120, "default": 60}, "How many."),
        ),
    ),
    _admin("GET", "/admin/workers", admin.Workers, "Live workers", ("Workers.", r.WorkerList)),
    _admin(
        "GET",
        "/admin/dead-letters",
        admin.DeadLetters,
        "Jobs that failed for good, newest first",
        ("A page.", r.DeadLetterPage),
        query=(Param("function", {"type": "string"}, "Only this job function."), LIMIT, CURSOR),
    ),
    _admin("GET", DEAD, admin.DeadLetter, "One dead letter", ("The entry.", r.DeadLetter)),
    # After the GET: the rightful caller discards the dead letter it just read.
    _admin("DELETE", DEAD, admin.DeadLetter, "Discard a dead letter", NO_CONTENT, 204),
    _admin(
        "POST",
        f"{DEAD}/retry",
        admin.DeadLetterRetry,
        "Put a dead letter back on the queue, tries reset",
        ("Queued again; `Location` names the job.", r.RetryAccepted),
        status=202,
        errors={409: "The job is queued or running already."},
    ),
    _admin(
        "GET",
        "/admin/jobs/{job_id}",
        admin.AdminJob,
        "Any job, with args, worker and traceback",
        ("The job.", r.AdminJobView),
    ),
    _admin(
        "GET",
        "/admin/webhooks",
        webhooks.Webhooks,
        "Every webhook",
        ("The webhooks, with their secrets.", r.WebhookList),
    ),
    _admin(
        "POST",
        "/admin/webhooks",
        webhooks.Webhooks,
        "Register a webhook",
        ("Registered; `Location` names it.", r.WebhookView),
        status=201,
        body=webhooks.WebhookBody,
        example={"url": "https://push.example.com/chat-events", "events": ["message.created"]},
        description=(
            "Each event of the given types is POSTed to `url` as `{id, type, created_at, data}`, signed"
            " with `secret` (generated when not given): see docs/api.md, Webhooks. Takes effect within"
            " `WEBHOOK_REGISTRY_REFRESH_SECONDS`."
        ),
    ),
    _admin(
        "GET", WEBHOOK, webhooks.WebhookById, "One webhook", ("The webhook, with its secret.", r.WebhookView)
    ),
    # After the GET, as for dead letters.
    _admin(
        "DELETE",
        WEBHOOK,
        webhooks.WebhookById,
        "Delete a webhook",
        NO_CONTENT,
        204,
        description="Deliveries still queued for it end without a request.",
    ),
    # The page holds no data; its calls need an admin.
    Operation(
        "GET",
        "/admin/ui",
        admin_ui.AdminUI,
        TAG,
        "The job dashboard (an HTML page)",
        "public",
        {200: ("The page; it signs in with an admin's credentials.", None)},
        dependencies=False,
        media="text/html",
    ),
)
