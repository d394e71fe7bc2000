"""The in-process api with settings of a test's own, over the test's Postgres and Redis."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from falcon.testing import ASGIConductor

from api.app import build_deps, create_app
from chat.settings import Settings
from tests.support import ApiClient
from tests.support.settings import make_settings


@contextlib.asynccontextmanager
async def api_with(settings: Settings, **overrides: Any) -> AsyncIterator[ApiClient]:
    """The api (lifespan included) as the `api` fixture builds it, with `overrides` on top.

    It uses the Postgres and Redis of `settings` unless `overrides` name others (an outage test's
    closed port, say), and signs and checks tokens with the same key, so the `api` fixture's users
    are users here too. Its database and Redis clients are closed afterwards.
    """
    changed = make_settings(
        **{"database_url": settings.database_url, "redis_url": settings.redis_url, **overrides}
    )
    deps = build_deps(changed)
    try:
        async with ASGIConductor(create_app(changed, deps)) as conductor:
            yield ApiClient(conductor)
    finally:
        await deps.aclose()
