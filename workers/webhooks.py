"""The `deliver_webhook` job: POST one event to one webhook, signed, retried with back-off.

A timeout, a connection error or any answer but 2xx is a failed attempt: retried
WEBHOOK_BACKOFF_SECONDS * 2^(try - 1) later (capped at WEBHOOK_BACKOFF_MAX_SECONDS) until the
WEBHOOK_MAX_TRIES-th, whose failure fails the job, which puts it in the dead letters (retryable
from `/admin/dead-letters`). Redirects are not followed: a receiver that moved is a failure to
see, not a place to send signed events to.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict

from chat.domain.webhooks import Dispatcher, signature
from chat.infra import metrics
from chat.infra.failures import redact_url, redact_urls
from chat.jobqueue.jobs import Retry
from chat.settings import Settings
from chat.usecases.erasure import about_erased
from workers.context import JobContext
from workers.tasks import job


class Delivery(BaseModel):
    """The job's payload: which webhook, the delivery's id (`X-Webhook-Id`) and the event body."""

    model_config = ConfigDict(extra="forbid")

    webhook_id: uuid.UUID
    delivery_id: uuid.UUID
    event: dict[str, Any]


class DeliveryFailed(Exception):
    """The last try failed too: the job fails and its dead letter says why."""


def backoff(settings: Settings, job_try: int) -> float:
    delay = settings.webhook_backoff_seconds * 2 ** (job_try - 1)
    return float(min(delay, settings.webhook_backoff_max_seconds))


# How much of a receiver's answer is read: its status is the answer; the body is read only so that
# a small one leaves the connection reusable. A 300 MiB answer, read whole, took a worker (which
# also stores messages) from 100 MB to 728 MB.
MAX_ANSWER_BYTES = 64 * 1024


async def attempt(
    client: httpx.AsyncClient, url: str, delivery: Delivery, secret: str, *, deadline: float | None = None
) -> str | None:
    """One POST; None when the receiver took it (2xx), else what went wrong.

    `deadline` (seconds, by default the client's read timeout) bounds the whole attempt: httpx's
    timeouts are per read, so a receiver trickling bytes would otherwise hold the slot for ever.
    """
    body = orjson.dumps(delivery.event)
    timestamp = int(time.time())  # of this attempt: a receiver rejects stale ones
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Id": str(delivery.delivery_id),
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": signature(secret, timestamp, body),
    }
    limit = deadline if deadline is not None else (client.timeout.read or 10.0)
    status: int | None = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                await _skim(response)
    except (TimeoutError, httpx.TimeoutException):
        if status is None:
            return "timed out"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        if status is None:
            return redact_urls(f"{type(exc).__name__}: {exc}")
    finally:
        metrics.WEBHOOK_SECONDS.observe(time.perf_counter() - started)
    if status is None:  # every way to get here without a status returned above
        return "no answer"
    # Once the status line arrived it is the answer, whatever became of the body after it.
    if 200 <= status < 300:
        return None
    return f"HTTP {status}"


async def _skim(response: httpx.Response) -> None:
    """Read at most MAX_ANSWER_BYTES of the body, undecoded (a compressed one cannot expand in
    memory), each chunk dropped as read; leaving the `stream` block closes the rest unread."""
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen >= MAX_ANSWER_BYTES:
            return


@job
async def deliver_webhook(ctx: JobContext, payload: dict[str, Any]) -> str:
    delivery = Delivery.model_validate(payload)
    dispatcher: Dispatcher = ctx["webhooks"]
    hook = await dispatcher.registry.get(delivery.webhook_id)
    if hook is None:
        # Deleted since the event: nobody wants it any more, and no dead letter should say otherwise.
        metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
        return "webhook deleted"
    if await about_erased(ctx["sessions"], delivery.event):
        # Queued before its user was erased: nothing of theirs leaves after the erasure.
        metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
        return "its user was erased"
    settings = ctx["settings"]
    failure = await attempt(
        ctx["http"], hook.url, delivery, hook.secret, deadline=settings.webhook_timeout_seconds
    )
    if failure is None:
        metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
        return "delivered"
    tries = int(ctx.get("job_try", 1))
    # Raised here, outside the except blocks above: an exception chained to a socket error would
    # look like an outage to `job`, which retries those on the queue's terms instead of ours.
    if tries < settings.webhook_max_tries:
        metrics.WEBHOOK_DELIVERIES.labels("retried").inc()
        raise Retry(defer=backoff(settings, tries))
    metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
    # The URL without its credentials or query: this text goes to the log and the dead letters.
    raise DeliveryFailed(f"{redact_url(hook.url)}: {failure} (try {tries} of {settings.webhook_max_tries})")
