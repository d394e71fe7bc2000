"""`/admin/webhooks`: admins register the URLs that receive events (chat.usecases.webhooks)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from falcon.asgi import Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.fields import NoNul, _Rule
from api.http import parse, path_uuid, send
from api.resources.admin import AdminOnly
from chat.domain import webhooks
from chat.infra.db import Sessions
from chat.usecases import webhooks as hooks

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


@dataclass(frozen=True, slots=True)
class Webhooks(AdminOnly):
    """`GET` every webhook, oldest first; `POST` registers one (`201`)."""

    sessions: Sessions
    max_body: int

    async def on_get(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        send(resp, {"items": await hooks.list_all(self.sessions)})

    async def on_post(self, req: Request, resp: Response) -> None:
        await self._require_admin(req)
        body = await parse(req, WebhookBody, self.max_body)
        created = await hooks.create(self.sessions, self.redis, body.url, body.events, body.secret)
        resp.set_header("Location", f"{req.path}/{created['id']}")
        send(resp, created, 201)


@dataclass(frozen=True, slots=True)
class WebhookById(AdminOnly):
    """`GET` one webhook; `DELETE`: `204`, deliveries still queued for it end without a request."""

    sessions: Sessions

    async def on_get(self, req: Request, resp: Response, webhook_id: str) -> None:
        await self._require_admin(req)
        send(resp, await hooks.get(self.sessions, path_uuid(webhook_id, "webhook")))

    async def on_delete(self, req: Request, resp: Response, webhook_id: str) -> None:
        await self._require_admin(req)
        await hooks.remove(self.sessions, self.redis, path_uuid(webhook_id, "webhook"))
        resp.status = 204
