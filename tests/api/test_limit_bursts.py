"""Every rate limit of the api under a burst: N requests at once through one `asyncio.gather`, N well
above the limit, with the limit set low. No more than the limit's worth may get through (a limit that
counts after the work lets every request in flight pass a check none of them has counted yet), and
every other answer is a 429 problem with `Retry-After`.

The limits of CONTRACT.md's table that the api enforces, and the uploads per user of
`chat/settings.py`; the push process's (sockets per user, client frames) are in `tests/push/`, and
the typing interval's burst is `tests/api/test_concurrency.py::test_typing_at_once_is_one_notification`.
Each limit is per hour: the whole burst falls in one window, so the count is exact.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from falcon.testing import Result
from sqlalchemy import func, select

from api.deps import Deps
from chat.models import Message, RefreshToken, Upload, User
from chat.settings import Settings
from tests.support import PASSWORD, ApiClient, assert_problem
from tests.support.apps import api_with
from tests.support.settings import RunWorker

N = 30
LIMIT = 5
PER_HOUR = f"{LIMIT}/hour"

Limited = Callable[..., AbstractAsyncContextManager[ApiClient]]


@pytest.fixture
def limited(settings: Settings) -> Limited:
    """The api over the test's Postgres and Redis with one limit set low (the others stay off)."""

    def build(**limit: Any) -> AbstractAsyncContextManager[ApiClient]:
        return api_with(settings, **limit)

    return build


async def burst(requests: Iterable[Awaitable[Result]]) -> list[Result]:
    results = list(await asyncio.gather(*requests))
    assert not [r for r in results if r.status_code >= 500], [r.text for r in results if r.status_code >= 500]
    return results


def refused(results: list[Result], passed: int) -> None:
    """`passed` got through; every other answer is a 429 that says when to come back."""
    tally = Counter(r.status_code for r in results)
    assert tally[429] == len(results) - passed, tally
    for result in results:
        if result.status_code == 429:
            assert_problem(result, 429)
            assert int(result.headers["retry-after"]) >= 1, result.headers


async def count(deps: Deps, query: Any) -> int:
    async with deps.engine.connect() as conn:
        return int(await conn.scalar(query))


async def test_a_burst_of_failed_logins_for_one_username_checks_at_most_the_limit(
    api: ApiClient, limited: Limited
) -> None:
    alice = await api.user()
    wrong = {"username": alice.username, "password": "not the password"}
    async with limited(rate_limit_login_per_username=PER_HOUR) as strict:
        results = await burst(strict.post("/auth/login", json=wrong) for _ in range(N))
        assert Counter(r.status_code for r in results) == {401: LIMIT, 429: N - LIMIT}
        refused(results, LIMIT)
        # Over the limit even the right password waits: that is what stops guessing.
        right = {"username": alice.username, "password": PASSWORD}
        assert_problem(await strict.post("/auth/login", json=right), 429)


async def test_a_burst_of_logins_from_one_address_lets_the_limit_through(
    api: ApiClient, deps: Deps, limited: Limited
) -> None:
    alice = await api.user()
    body = {"username": alice.username, "password": PASSWORD}
    async with limited(rate_limit_login_per_address=PER_HOUR) as strict:
        results = await burst(strict.post("/auth/login", json=body) for _ in range(N))
    assert Counter(r.status_code for r in results) == {200: LIMIT, 429: N - LIMIT}
    refused(results, LIMIT)
    logins = select(func.count()).where(RefreshToken.user_id == uuid.UUID(alice.id))
    assert await count(deps, logins) == LIMIT + 1  # and the login of `api.user`


async def test_a_burst_of_registrations_from_one_address_makes_the_limit_of_users(
    deps: Deps, limited: Limited
) -> None:
    names = [f"burst_{i}_{uuid.uuid4().hex[:6]}" for i in range(N)]
    async with limited(rate_limit_register_per_address=PER_HOUR) as strict:
        results = await burst(
            strict.post("/auth/register", json={"username": name, "password": PASSWORD}) for name in names
        )
    assert Counter(r.status_code for r in results) == {201: LIMIT, 429: N - LIMIT}
    refused(results, LIMIT)
    assert await count(deps, select(func.count()).select_from(User)) == LIMIT


async def test_a_burst_of_sends_by_one_user_accepts_the_limit_with_no_hole_in_seq(
    api: ApiClient, deps: Deps, limited: Limited, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    path = f"/conversations/{cid}/messages"
    async with limited(rate_limit_sends_per_user=PER_HOUR) as strict:
        results = await burst(strict.post(path, alice, json={"body": f"m{i}"}) for i in range(N))
        assert Counter(r.status_code for r in results) == {202: LIMIT, 429: N - LIMIT}
        refused(results, LIMIT)
        # The limit is the sender's: bob still sends.
        assert (await strict.post(path, bob, json={"body": "mine"})).status_code == 202
    accepted = sorted(r.json["seq"] for r in results if r.status_code == 202)
    assert accepted == list(range(1, LIMIT + 1))  # a refused send takes no seq
    await run_worker()
    stored = select(func.count()).where(Message.conversation_id == uuid.UUID(cid))
    assert await count(deps, stored) == LIMIT + 1


async def test_a_burst_of_uploads_by_one_user_creates_the_limit_of_uploads(
    api: ApiClient, deps: Deps, limited: Limited
) -> None:
    alice, bob = await api.user(), await api.user()
    body = {"filename": "a.txt", "content_type": "text/plain", "size": 3}
    async with limited(rate_limit_uploads_per_user=PER_HOUR) as strict:
        results = await burst(strict.post("/uploads", alice, json=body) for _ in range(N))
        assert Counter(r.status_code for r in results) == {201: LIMIT, 429: N - LIMIT}
        refused(results, LIMIT)
        assert (await strict.post("/uploads", bob, json=body)).status_code == 201  # per user
    mine = select(func.count()).where(Upload.owner_id == uuid.UUID(alice.id))
    assert await count(deps, mine) == LIMIT
