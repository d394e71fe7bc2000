"""A real HTTP server that receives webhook deliveries, answering as each test scripts it, and
the receiver's side of the signature check exactly as docs/api.md shows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiohttp import web
from multidict import CIMultiDict

from chat.settings import Settings
from tests.support.stack import ROOT

Answer = Literal["ok", "fail", "hang"]


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Answers the n-th request with `script[n]` (then `then`): `ok` 204, `fail` 500, `hang` no
    answer for `hang_seconds` (longer than the sender's timeout)."""

    script: list[Answer] = field(default_factory=list)
    then: Answer = "ok"
    hang_seconds: float = 2.0
    url: str = ""
    received: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        got = Received({k.lower(): v for k, v in request.headers.items()}, await request.read())
        answer = self.script[len(self.received)] if len(self.received) < len(self.script) else self.then
        self.received.append(got)
        if answer == "hang":
            await asyncio.sleep(self.hang_seconds)
            return web.Response(status=504)
        if answer == "fail":
            return web.Response(status=500, text="not today")
        self.accepted.append(got)
        self.arrived.set()
        return web.Response(status=204)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    """Serve `receiver` on a free local port for the duration."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def docs_verify() -> Callable[[str, Mapping[str, str], bytes], bool]:
    """`verify_webhook` as docs/api.md writes it, run from the page itself: what a receiver would
    copy, kept apart from chat.domain.webhooks on purpose."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text[text.index("## Webhooks") :]
    code = section[section.index("```python") + len("```python") :]
    namespace: dict[str, Any] = {}
    exec(code[: code.index("```")], namespace)  # our own documentation, as a reader copies it
    verify: Callable[[str, Mapping[str, str], bytes], bool] = namespace["verify_webhook"]
    return verify


def verify(secret: str, received: Received) -> bool:
    """The documented check on one received request, its headers as a framework gives them."""
    return docs_verify()(secret, CIMultiDict(received.headers), received.body)


def quick_deliveries(settings: Settings, max_tries: int, **more: Any) -> Settings:
    """Short waits so retries run within a test; a registry re-read on every use, so a webhook
    registered a moment ago counts at once in the api's own process too."""
    return settings.model_copy(
        update={
            "webhook_backoff_seconds": 0.05,
            "webhook_timeout_seconds": 0.5,
            "webhook_max_tries": max_tries,
            "webhook_registry_refresh_seconds": 0,
            **more,
        }
    )
