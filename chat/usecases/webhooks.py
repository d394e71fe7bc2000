"""Admins' webhooks: register, list, read, delete (docs/api.md, Webhooks).

Every change bumps the registry's version key in Redis, after the commit, so each process's
cached list (chat.domain.webhooks.Registry) picks it up within WEBHOOK_REGISTRY_REFRESH_SECONDS.
The caller has checked that the user is an admin.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, select

from chat.domain import webhooks
from chat.errors import NotFound
from chat.infra.db import Sessions
from chat.models import Webhook


def view(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "events": hook.events,
        "secret": hook.secret,
        "created_at": hook.created_at,
    }


async def create(
    sessions: Sessions, redis: Redis, url: str, events: list[str], secret: str | None
) -> dict[str, Any]:
    """Register a webhook; with no `secret`, one is generated."""
    hook = Webhook(url=url, events=events, secret=secret or secrets.token_urlsafe(32))
    async with sessions() as session:
        session.add(hook)
        await session.commit()
        created = view(hook)
    await webhooks.bump(redis)
    return created


async def list_all(sessions: Sessions) -> list[dict[str, Any]]:
    """Every webhook, oldest first."""
    async with sessions() as session:
        hooks = await session.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id))
        return [view(hook) for hook in hooks]


async def get(sessions: Sessions, hook_id: uuid.UUID) -> dict[str, Any]:
    async with sessions() as session:
        hook = await session.get(Webhook, hook_id)
        if hook is None:
            raise NotFound("No such webhook.")
        return view(hook)


async def remove(sessions: Sessions, redis: Redis, hook_id: uuid.UUID) -> None:
    """Deliveries still queued for it end without a request."""
    async with sessions() as session:
        gone = await session.execute(delete(Webhook).where(Webhook.id == hook_id).returning(Webhook.id))
        found = gone.first() is not None
        await session.commit()
    if not found:
        raise NotFound("No such webhook.")
    await webhooks.bump(redis)
