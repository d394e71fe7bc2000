"""RATE_LIMIT_SOCKETS_PER_USER under a burst: one user's sockets opening all at once, across two push
apps on one real Redis (as two push processes would be), get no more than the cap between them;
every other socket is closed 4429 with the wait in its reason.

The other limit of the push process, RATE_LIMIT_CLIENT_FRAMES, counts one socket's frames, which
arrive in order: its burst (frames queued at once) is
`tests/push/test_session.py::test_client_frames_over_the_limit_close_4429`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections import Counter

import orjson
from falcon import WebSocketDisconnected
from falcon.testing import ASGIConductor

from chat.identity.security import Tokens
from chat.settings import Settings
from push.app import create_app
from tests.support import ApiClient
from tests.support.settings import make_settings

SPEC = "2.4"  # Falcon forwards a close reason only to servers of ASGI spec 2.3 or later
CAP = 3
N = 16
RETRY_HINT = re.compile(r"too many sockets; retry after [1-9]\d* s")


async def _open(conductor: ASGIConductor, query: str, everyone: asyncio.Barrier) -> tuple[str, str | None]:
    """Open a socket and hold it until every socket of the burst has its answer: ("ready", None),
    or ("closed <code>", reason)."""
    async with asyncio.timeout(10), conductor.simulate_ws("/ws", query_string=query, spec_version=SPEC) as ws:
        outcome: tuple[str, str | None] | None = None
        with contextlib.suppress(WebSocketDisconnected):
            await ws.wait_ready()
            frame = orjson.loads(await ws.receive_text())
            outcome = (frame["type"], None)
        if outcome is None:
            outcome = (f"closed {ws.close_code}", ws.close_reason)
        await everyone.wait()
        return outcome


async def test_a_burst_of_one_users_sockets_gets_at_most_the_cap(api: ApiClient, settings: Settings) -> None:
    user = await api.user()  # the handshake may check that its user exists
    push_settings = make_settings(
        database_url=settings.database_url, redis_url=settings.redis_url, rate_limit_sockets_per_user=CAP
    )
    query = f"token={Tokens(push_settings).issue_access(uuid.UUID(user.id))}"
    everyone = asyncio.Barrier(N)
    async with (
        ASGIConductor(create_app(push_settings)) as first,
        ASGIConductor(create_app(push_settings)) as second,
    ):
        outcomes = await asyncio.gather(
            *(_open(first if i % 2 else second, query, everyone) for i in range(N))
        )
        tally = Counter(kind for kind, _ in outcomes)
        assert tally == {"ready": CAP, "closed 4429": N - CAP}, outcomes
        for kind, reason in outcomes:
            if kind != "ready":
                assert reason is not None and RETRY_HINT.fullmatch(reason), reason
        # Every one closed: the slots are free again at once.
        again = await _open(first, query, asyncio.Barrier(1))
        assert again == ("ready", None)
