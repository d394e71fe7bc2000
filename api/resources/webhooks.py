"""`/admin/webhooks`: admins register the URLs that receive events (docs/api.md, Webhooks).

Every change bumps the registry's version key in Redis, after the commit, so each process's
cached list (chat.webhooks.Registry) picks it up within WEBHOOK_REGISTRY_REFRESH_SECONDS.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from falcon.asgi import Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.fields import NoNul, _Rule
from api.http import parse, path_uuid, send
from api.resources.admin import AdminOnly
from chat import webhooks
from chat.errors import NotFound
from chat.models import Webhook

EVENT_TYPES = list(webhooks.EVENT_TYPES)
MAX_URL = 2048
MIN_SECRET, MAX_SECRET = 16, 256
# Stated in the schema, so generated clients and tests see it; the check below adds what a
# pattern cannot say (a host, a valid port).
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s\x00/?#]+[^\s\x00]*$"


def _url(value: str) -> str:
    if not re.fullmatch(URL_PATTERN, value):
        raise ValueError("must be an absolute http:// or https:// URL")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ValueError("must name a host")
    return value


def _events(value: list[str]) -> list[str]:
    unknown = [event for event in value if event not in webhooks.EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {', '.join(webhooks.EVENT_TYPES)}")
    return list(dict.fromkeys(value))


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: Annotated[str, Field(max_length=MAX_URL), _Rule(_url, URL_PATTERN)]
    events: Annotated[
        list[str],
        Field(min_length=1, json_schema_extra={"items": {"type": "string", "enum": EVENT_TYPES}}),
        AfterValidator(_events),
    ]
    secret: Annotated[str, Field(min_length=MIN_SECRET, max_length=MAX_SECRET), NoNul] | None = Field(
        None, description="Signs every delivery; one is generated when none is given."
    )


def view(hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": hook.url,
        "events": hook.events,
        "secret": hook.secret,
        "created_at": hook.created_at,
    }


@dataclass(frozen=True, slots=True)
class Webhooks(AdminOnly):
    """`GET` every webhook, oldest first; `POST` registers one (`201`)."""

    sessions: async_sessionmaker[AsyncSession]
    max_body: int

    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        async with self.sessions() as session:
            hooks = await session.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id))
            send(resp, {"items": [view(hook) for hook in hooks]})

    async def on_post(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        body = await parse(req, WebhookBody, self.max_body)
        hook = Webhook(url=body.url, events=body.events, secret=body.secret or secrets.token_urlsafe(32))
        async with self.sessions() as session:
            session.add(hook)
            await session.commit()
            created = view(hook)
        await webhooks.bump(self.redis)
        resp.set_header("Location", f"{req.path}/{hook.id}")
        send(resp, created, 201)


@dataclass(frozen=True, slots=True)
class WebhookById(AdminOnly):
    """`GET` one webhook; `DELETE`: `204`, deliveries still queued for it end without a request."""

    sessions: async_sessionmaker[AsyncSession]

    async def on_get(self, req: Request, resp: Response, webhook_id: str) -> None:
        await self._require_admin(req)
        hook_id = path_uuid(webhook_id, "webhook")
        async with self.sessions() as session:
            hook = await session.get(Webhook, hook_id)
            if hook is None:
                raise NotFound("No such webhook.")
            send(resp, view(hook))

    async def on_delete(self, req: Request, resp: Response, webhook_id: str) -> None:
        await self._require_admin(req)
        hook_id = path_uuid(webhook_id, "webhook")
        async with self.sessions() as session:
            gone = await session.execute(delete(Webhook).where(Webhook.id == hook_id).returning(Webhook.id))
            found = gone.first() is not None
            await session.commit()
        if not found:
            raise NotFound("No such webhook.")
        await webhooks.bump(self.redis)
        resp.status = 204
