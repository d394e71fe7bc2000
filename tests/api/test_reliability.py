"""Issue-by-issue: no 5xx under concurrency, rate limits, no leaks, and outages as 503."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, text

from api.deps import Deps
from chat.identity.security import Passwords
from chat.models import User
from chat.settings import Settings
from tests.support import ApiClient, assert_problem
from tests.support.apps import api_with
from tests.support.chatload import until
from tests.support.settings import RunWorker


@pytest.fixture
async def small_pool(settings: Settings) -> AsyncIterator[ApiClient]:
    """The api with a pool of two connections (plus two overflow), to make pool misuse visible."""
    async with api_with(settings, database_pool_size=2, database_pool_timeout_seconds=3) as tight:
        yield tight


async def test_concurrent_adds_to_a_group_neither_freeze_nor_fail(small_pool: ApiClient) -> None:
    api = small_pool
    owner = await api.user()
    people = [await api.user() for _ in range(5)]
    gid = (await api.conversation(owner, people[0]))["id"]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            api.post(f"/conversations/{gid}/participants", owner, json={"user_ids": [p.id for p in people]})
            for _ in range(20)
        )
    )
    assert Counter(r.status_code for r in results) == {200: 20}
    assert time.perf_counter() - started < 3
    view = (await api.get(f"/conversations/{gid}", owner)).json
    assert len(view["participants"]) == 6


async def test_concurrent_creations_of_one_direct_conversation(api: ApiClient) -> None:
    alice, bob = await api.user(), await api.user()
    body = {"kind": "direct", "participant_ids": [bob.id]}
    results = await asyncio.gather(*(api.post("/conversations", alice, json=body) for _ in range(20)))
    assert Counter(r.status_code for r in results) == {201: 1, 200: 19}
    assert len({r.json["id"] for r in results}) == 1


async def test_logins_hash_without_holding_a_connection(
    small_pool: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = small_pool
    alice, bob = await api.user(), await api.user()
    await api.conversation(alice, bob, kind="direct")
    real = Passwords.verify

    def slow(self: Passwords, password_hash: str | None, password: str) -> bool:
        time.sleep(0.3)  # an expensive hash, as production's Argon2 parameters make it
        return real(self, password_hash, password)

    monkeypatch.setattr(Passwords, "verify", slow)
    bad = [
        api.post("/auth/login", json={"username": alice.username, "password": "wrong password"})
        for _ in range(8)
    ]
    logins = asyncio.gather(*bad)
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    listed = await api.get("/conversations", bob)
    elapsed = time.perf_counter() - started
    results = await logins
    assert listed.status_code == 200 and elapsed < 0.5, elapsed
    assert {r.status_code for r in results} == {401}


async def test_a_message_is_404_alike_whether_missing_or_not_yours(
    api: ApiClient, run_worker: RunWorker
) -> None:
    alice, bob, eve = await api.user(), await api.user(), await api.user()
    cid = (await api.conversation(alice, bob, kind="direct"))["id"]
    sent = await api.post(f"/conversations/{cid}/messages", alice, json={"body": "private"})
    await run_worker()
    hidden = assert_problem(await api.get(f"/messages/{sent.json['id']}", eve), 404)
    missing = assert_problem(await api.get(f"/messages/{uuid.uuid4()}", eve), 404)
    assert hidden == missing
    for method in ("PATCH", "DELETE"):
        kw: dict[str, Any] = {"json": {"body": "x"}} if method == "PATCH" else {}
        a = assert_problem(await api.request(method, f"/messages/{sent.json['id']}", eve, **kw), 404)
        b = assert_problem(await api.request(method, f"/messages/{uuid.uuid4()}", eve, **kw), 404)
        assert a == b


async def test_a_client_id_with_another_body_is_409_after_an_edit(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, _, cid = await api.pair()
    path = f"/conversations/{cid}/messages"
    first = await api.post(path, alice, json={"body": "original", "client_id": "k"})
    await run_worker()
    assert (
        await api.patch(f"/messages/{first.json['id']}", alice, json={"body": "edited"})
    ).status_code == 202
    await run_worker()
    assert_problem(await api.post(path, alice, json={"body": "something else", "client_id": "k"}), 409)
    same = await api.post(path, alice, json={"body": "original", "client_id": "k"})
    assert (same.status_code, same.json["seq"]) == (202, first.json["seq"])
    # Redis forgot everything: Postgres remembers the first body's digest, edit or not.
    await deps.redis.flushdb()
    assert_problem(await api.post(path, alice, json={"body": "something else", "client_id": "k"}), 409)
    again = await api.post(path, alice, json={"body": "original", "client_id": "k"})
    assert (again.status_code, again.json["id"], again.json["seq"]) == (
        202,
        first.json["id"],
        first.json["seq"],
    )


async def test_sql_parameters_never_reach_the_log(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from chat.usecases import conversations

    alice = await api.user()

    secret = "-".join(("secret", "request", "value"))  # the literal never appears in a traceback line

    async def leaky(session: Any, conversation_id: Any, user_id: Any) -> None:
        # A bug that sends a request value to Postgres, which quotes it back in its error.
        await session.execute(text("SELECT CAST(:v AS integer)"), {"v": secret})

    monkeypatch.setattr(conversations, "require_participant", leaky)
    with caplog.at_level(logging.ERROR):
        failed = await api.get(f"/conversations/{uuid.uuid4()}", alice)
    assert_problem(failed, 500)
    assert "unhandled error" in caplog.text and "statement: SELECT CAST" in caplog.text
    assert secret not in caplog.text


async def test_a_token_of_a_user_who_is_gone_is_401(api: ApiClient, deps: Deps) -> None:
    alice, bob = await api.user(), await api.user()
    async with deps.engine.begin() as conn:
        await conn.execute(delete(User).where(User.id == uuid.UUID(alice.id)))
    body = {"kind": "direct", "participant_ids": [bob.id]}
    for result in (
        await api.post("/conversations", alice, json=body),
        await api.get("/users/me", alice),
        await api.patch("/users/me", alice, json={"display_name": "ghost"}),
    ):
        problem = assert_problem(result, 401)
        assert "no longer exists" in problem["detail"]
        assert result.headers["www-authenticate"].startswith("Bearer")


async def test_every_response_carries_the_security_headers(api: ApiClient) -> None:
    alice = await api.user()
    for result in (
        await api.get("/users/me", alice),
        await api.post("/auth/login", json={"username": alice.username, "password": "nope nope"}),
        await api.get("/nowhere"),
    ):
        assert result.headers["x-content-type-options"] == "nosniff"
        assert result.headers["cache-control"] == "no-store"
        assert result.headers["x-frame-options"] == "DENY"
        assert "server" not in result.headers


# -- rate limits -------------------------------------------------------------------------------


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[ApiClient]:
    async with api_with(
        settings,
        rate_limit_login_per_username="3/minute",
        rate_limit_login_per_address="8/minute",
        rate_limit_register_per_address="6/hour",
        rate_limit_sends_per_user="5/second",
        rate_limit_uploads_per_user="3/minute",
    ) as strict:
        yield strict


def assert_limited(result: Any) -> None:
    assert_problem(result, 429)
    assert int(result.headers["retry-after"]) >= 1
    assert result.headers["x-ratelimit-remaining"] == "0"


async def test_failed_logins_per_username(limited: ApiClient) -> None:
    alice = await limited.user()
    wrong = {"username": alice.username, "password": "wrong password"}
    for _ in range(3):
        assert_problem(await limited.post("/auth/login", json=wrong), 401)
    assert_limited(await limited.post("/auth/login", json=wrong))
    # Over the limit even the right password waits: that is what stops guessing.
    right = {"username": alice.username, "password": "correct horse battery"}
    assert_problem(await limited.post("/auth/login", json=right), 429)


async def test_logins_and_registrations_per_address(limited: ApiClient) -> None:
    users = [await limited.user() for _ in range(3)]  # 3 registrations, 3 logins
    registered = await limited.post(
        "/auth/register", json={"username": "fourth_user", "password": "fourth password"}
    )
    assert registered.status_code == 201 and registered.headers["x-ratelimit-limit"] == "6"
    for _ in range(2):
        assert (
            await limited.post(
                "/auth/register", json={"username": f"u{uuid.uuid4().hex[:8]}", "password": "fifth password"}
            )
        ).status_code == 201
    assert_limited(
        await limited.post("/auth/register", json={"username": "too_many", "password": "sixth password"})
    )
    body = {"username": users[0].username, "password": "correct horse battery"}
    statuses = [(await limited.post("/auth/login", json=body)).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    # Behind a trusted proxy the client address is the hop the proxy appended, not the proxy.
    forwarded = await limited.post("/auth/login", json=body, headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.status_code == 429  # 127.0.0.1 is not a trusted proxy here: the header is ignored


async def test_sends_per_user(limited: ApiClient) -> None:
    alice, bob, cid = await limited.pair()
    path = f"/conversations/{cid}/messages"
    results = [await limited.post(path, alice, json={"body": f"m{i}"}) for i in range(7)]
    statuses = [r.status_code for r in results]
    assert statuses.count(202) == 5 and statuses[-1] == 429, statuses
    retry_after = int(results[-1].headers["retry-after"])
    assert retry_after >= 1
    # A repeat of an accepted client_id is an answer, not a new send: it is not limited.
    other = await limited.post(path, bob, json={"body": "hi", "client_id": "b1"})
    assert other.status_code == 202

    # Accepted again once the window has moved on, within the Retry-After it was told; polled
    # rather than slept for, since a refused send takes no slot.
    async def accepted_later() -> bool:
        later = await limited.post(path, alice, json={"body": "later"})
        assert later.status_code in (202, 429), later.status_code
        return later.status_code == 202

    await until(accepted_later, "a send accepted after the window", retry_after + 0.5)


async def test_uploads_per_user(limited: ApiClient) -> None:
    alice, bob = await limited.user(), await limited.user()
    body = {"filename": "a.txt", "content_type": "text/plain", "size": 3}
    # An invalid request is refused for what it is, and counts for nothing.
    assert_problem(await limited.post("/uploads", alice, json={**body, "size": 0}), 422)
    results = [await limited.post("/uploads", alice, json=body) for _ in range(4)]
    assert [r.status_code for r in results] == [201, 201, 201, 429]
    assert int(results[-1].headers["retry-after"]) >= 1
    assert (await limited.post("/uploads", bob, json=body)).status_code == 201  # per user


def test_client_address_believes_only_trusted_proxies() -> None:
    import ipaddress

    from api.clientaddr import client_address

    class Req:
        def __init__(self, peer: str, forwarded: str | None) -> None:
            self.remote_addr = peer
            self._forwarded = forwarded

        def get_header(self, name: str) -> str | None:
            return self._forwarded if name == "X-Forwarded-For" else None

    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    cases = [
        ("198.51.100.7", "1.2.3.4", [], "198.51.100.7"),  # no trusted proxies: the peer
        ("198.51.100.7", "1.2.3.4", proxies, "198.51.100.7"),  # an untrusted peer's header is ignored
        ("10.0.0.5", "203.0.113.9", proxies, "203.0.113.9"),
        ("10.0.0.5", "6.6.6.6, 203.0.113.9, 10.1.1.1", proxies, "203.0.113.9"),  # forged left part
        ("10.0.0.5", None, proxies, "10.0.0.5"),
    ]
    for peer, forwarded, trusted, expected in cases:
        assert client_address(Req(peer, forwarded), trusted) == expected  # type: ignore[arg-type]


# -- outages -----------------------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sends_keep_working_while_postgres_is_down(
    api: ApiClient, settings: Settings, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    assert (
        await api.post(f"/conversations/{cid}/messages", alice, json={"body": "before"})
    ).status_code == 202
    # Tokens are checked without the database, so the same access tokens work here.
    gone = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/gone"
    async with api_with(settings, database_url=gone) as outage:
        for i in range(3):
            sent = await outage.post(
                f"/conversations/{cid}/messages",
                alice,
                json={"body": f"during {i}", "client_id": f"d{i}"},
            )
            assert sent.status_code == 202, sent.text
        repeat = await outage.post(
            f"/conversations/{cid}/messages", alice, json={"body": "during 0", "client_id": "d0"}
        )
        assert (repeat.status_code, repeat.json["seq"]) == (202, 2)
        history = await outage.get(f"/conversations/{cid}/messages", alice)
        problem = assert_problem(history, 503)
        assert "database" in problem["detail"] and int(history.headers["retry-after"]) >= 1
    await run_worker()
    history = (await api.get(f"/conversations/{cid}/messages", bob)).json["items"]
    assert [m["body"] for m in history] == ["before", "during 0", "during 1", "during 2"]


async def test_the_first_send_into_a_new_conversation_needs_no_postgres(
    api: ApiClient, settings: Settings, run_worker: RunWorker
) -> None:
    # Created just before Postgres went away, nothing sent yet: the send path still needs only Redis.
    alice, bob, cid = await api.pair()
    gone = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/gone"
    async with api_with(settings, database_url=gone) as outage:
        sent = await outage.post(f"/conversations/{cid}/messages", bob, json={"body": "first"})
        assert (sent.status_code, sent.json.get("seq")) == (202, 1), sent.text
    await run_worker()
    history = (await api.get(f"/conversations/{cid}/messages", alice)).json["items"]
    assert [(m["seq"], m["body"]) for m in history] == [(1, "first")]


async def test_a_redis_outage_is_503_not_500(api: ApiClient, settings: Settings) -> None:
    alice, bob, cid = await api.pair()
    async with api_with(settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0") as outage:
        for result in (
            await outage.post(f"/conversations/{cid}/messages", alice, json={"body": "lost?"}),
            await outage.get(f"/users/{bob.id}", alice),
        ):
            problem = assert_problem(result, 503)
            assert "Redis" in problem["detail"] and int(result.headers["retry-after"]) >= 1
