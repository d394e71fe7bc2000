"""Password guessing: the per-username limit holds under a burst, and common passwords are refused."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from chat.domain import ratelimit
from chat.domain.ratelimit import Limiter
from chat.infra.redisclient import create_redis
from tests.support import PASSWORD, ApiClient, assert_problem
from tests.support.settings import make_settings

LIMIT = 10  # RATE_LIMIT_LOGIN_PER_USERNAME's default, 10/15minutes, which the test settings keep


async def test_a_burst_of_wrong_passwords_checks_at_most_the_limit(api: ApiClient) -> None:
    alice = await api.user()
    wrong = {"username": alice.username, "password": "not the password"}
    results = await asyncio.gather(*(api.post("/auth/login", json=wrong) for _ in range(60)))
    tally = Counter(r.status_code for r in results)
    # Each attempt takes its slot before its password is checked: no more than the limit's worth of
    # guesses is ever checked, however many arrive at once.
    assert tally == {401: LIMIT, 429: 60 - LIMIT}, tally
    for refused in (r for r in results if r.status_code == 429):
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1
    right = await api.post("/auth/login", json={"username": alice.username, "password": PASSWORD})
    assert_problem(right, 429)


async def test_a_burst_for_another_spelling_of_the_username_shares_the_limit(api: ApiClient) -> None:
    alice = await api.user()
    spellings = [alice.username.upper(), alice.username, alice.username.capitalize()]
    results = await asyncio.gather(
        *(
            api.post("/auth/login", json={"username": spellings[i % 3], "password": f"guess {i}"})
            for i in range(30)
        )
    )
    assert Counter(r.status_code for r in results) == {401: LIMIT, 429: 30 - LIMIT}


async def test_a_successful_login_gives_its_slot_back(api: ApiClient) -> None:
    alice = await api.user()  # one successful login already
    wrong = {"username": alice.username, "password": "not the password"}
    right = {"username": alice.username, "password": PASSWORD}
    for _ in range(LIMIT - 1):
        assert_problem(await api.post("/auth/login", json=wrong), 401)
    # Right passwords, one after another and all at once: none of them counts as a failure.
    for _ in range(3):
        assert (await api.post("/auth/login", json=right)).status_code == 200
    burst = await asyncio.gather(*(api.post("/auth/login", json=right) for _ in range(5)))
    assert [r.status_code for r in burst] == [200] * 5
    # So exactly one guess is left.
    assert_problem(await api.post("/auth/login", json=wrong), 401)
    assert_problem(await api.post("/auth/login", json=wrong), 429)
    assert_problem(await api.post("/auth/login", json=right), 429)


async def test_an_unknown_username_is_limited_like_a_known_one(api: ApiClient) -> None:
    body = {"username": "nobody_here", "password": "not the password"}
    results = await asyncio.gather(*(api.post("/auth/login", json=body) for _ in range(20)))
    assert Counter(r.status_code for r in results) == {401: LIMIT, 429: 20 - LIMIT}


async def test_common_and_blank_passwords_are_refused_at_registration(api: ApiClient) -> None:
    weak = ["12345678", "password", "PassWord", "QWERTYUIOP", "iloveyou", " password1 ", " " * 8, "\t" * 10]
    for i, password in enumerate(weak):
        result = await api.post("/auth/register", json={"username": f"weak_{i}", "password": password})
        problem = assert_problem(result, 422)
        assert [e["field"] for e in problem["errors"]] == ["body.password"], problem
        message = problem["errors"][0]["message"]
        assert "common" in message or "blank" in message, message
    for i, password in enumerate(["correct horse battery", "Tr0ub4dor&3x", "password with more words"]):
        result = await api.post("/auth/register", json={"username": f"strong_{i}", "password": password})
        assert result.status_code == 201, result.text


async def test_the_failure_window_runs_on_the_dev_modes_fake_redis_too() -> None:
    settings = make_settings(redis_url=f"memory://{uuid.uuid4().hex}")
    redis = create_redis(settings)
    window, item = Limiter(redis, settings.redis_url).failures, ratelimit.parse("3/minute")
    assert item is not None
    first, second, third = [await window.reserve(item, "login-failed", "bob") for _ in range(3)]
    assert [r.verdict.remaining for r in (first, second, third)] == [2, 1, 0]
    refused = await window.reserve(item, "login-failed", "bob")
    assert (refused.attempt, refused.in_flight, refused.verdict.allowed) == (None, 3, False)
    assert first.attempt and second.attempt and third.attempt
    await window.settle(item, ("login-failed", "bob"), first.attempt, failed=False)
    await window.settle(item, ("login-failed", "bob"), second.attempt, failed=True)
    again = await window.reserve(item, "login-failed", "bob")
    assert again.attempt is not None  # the success's slot
    await window.settle(item, ("login-failed", "bob"), third.attempt, failed=True)
    await window.settle(item, ("login-failed", "bob"), again.attempt, failed=True)
    full = await window.reserve(item, "login-failed", "bob")
    # Three failures and nothing in flight: refused until the oldest failure leaves the window.
    assert (full.attempt, full.in_flight) == (None, 0)
    assert 55 <= full.verdict.retry_after <= 60
    assert (await window.reserve(item, "login-failed", "carol")).attempt is not None
    await redis.aclose()
