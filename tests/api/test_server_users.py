"""`/server/users/...`, `/server/tokens`, `/server/jobs`: the app's backend makes its users, mints
their tokens, deactivates, erases and exports them, with a server key and nothing else; the keys
themselves come from `headless-chat server-keys`."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from api.deps import Deps
from chat import cli
from chat.settings import Settings
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.apps import api_with
from tests.support.serverapi import server_key
from tests.support.settings import RunWorker


def fields(problem: dict[str, object]) -> list[object]:
    errors = problem["errors"]
    assert isinstance(errors, list)
    return [e["field"] for e in errors]


async def headless_chat(*argv: str) -> int:
    """The operator's command line, as a shell runs it (it has an event loop of its own)."""
    return await asyncio.to_thread(cli.main, list(argv))


def as_caller(token: str) -> TestUser:
    return TestUser(id="server", username="server", access_token=token, refresh_token="")


@pytest.fixture
async def server(deps: Deps) -> TestUser:
    return await server_key(deps)


async def test_put_makes_then_updates_a_user_who_then_gets_tokens(
    api: ApiClient, server: TestUser, unique: str
) -> None:
    path = f"/server/users/user-{unique}"
    made = await api.put(path, server, json={"display_name": "Ada", "username": f"ada{unique}"})
    assert made.status_code == 201, made.text
    user = made.json
    assert user["external_id"] == f"user-{unique}" and user["username"] == f"ada{unique}"
    assert user["display_name"] == "Ada" and user["deactivated"] is False

    updated = await api.put(path, server, json={"display_name": "Ada L.", "metadata": {"plan": "pro"}})
    assert updated.status_code == 200, updated.text
    assert updated.json["id"] == user["id"] and updated.json["metadata"] == {"plan": "pro"}
    assert (await api.get(path, server)).json["display_name"] == "Ada L."
    assert_problem(await api.get(f"/server/users/nobody-{unique}", server), 404)
    too_big = {"metadata": {"x": "y" * 5000}}
    assert fields(assert_problem(await api.put(path, server, json=too_big), 422)) == ["body.metadata"]

    minted = await api.post(
        "/server/tokens", server, json={"external_id": f"user-{unique}", "ttl_seconds": 60}
    )
    assert minted.status_code == 200, minted.text
    assert minted.json["token_type"] == "bearer" and minted.json["expires_in"] == 60
    me = await api.get("/users/me", as_caller(minted.json["access_token"]))
    assert (
        me.status_code == 200 and me.json["id"] == user["id"] and me.json["external_id"] == f"user-{unique}"
    )
    # A new external id makes its user; a TTL past APP_JWT_MAX_TTL_SECONDS is refused.
    fresh = await api.post("/server/tokens", server, json={"external_id": f"new-{unique}"})
    assert fresh.status_code == 200 and fresh.json["expires_in"] == 3600
    assert (await api.get(f"/server/users/new-{unique}", server)).status_code == 200
    long = {"external_id": f"user-{unique}", "ttl_seconds": 10**7}
    assert fields(assert_problem(await api.post("/server/tokens", server, json=long), 422)) == [
        "body.ttl_seconds"
    ]


async def test_deactivation_refuses_the_users_tokens_at_once_and_reactivation_lets_them_back(
    api: ApiClient, server: TestUser, unique: str
) -> None:
    path = f"/server/users/dee-{unique}"
    await api.put(path, server, json={})
    token = as_caller(
        (await api.post("/server/tokens", server, json={"external_id": f"dee-{unique}"})).json["access_token"]
    )
    assert (await api.get("/users/me", token)).status_code == 200

    assert (await api.post(f"{path}/deactivate", server)).status_code == 204
    assert_problem(await api.get("/users/me", token), 401)
    assert (await api.get(path, server)).json["deactivated"] is True
    assert_problem(await api.post("/server/tokens", server, json={"external_id": f"dee-{unique}"}), 409)

    assert (await api.post(f"{path}/reactivate", server)).status_code == 204
    assert (await api.get("/users/me", token)).status_code == 200
    assert_problem(await api.post(f"/server/users/nobody-{unique}/deactivate", server), 404)


async def test_erasure_is_a_job_the_server_can_follow_and_export_pages(
    api: ApiClient, server: TestUser, unique: str, run_worker: RunWorker
) -> None:
    path = f"/server/users/era-{unique}"
    await api.put(path, server, json={"display_name": "Era"})
    exported = await api.get(f"{path}/export", server)
    assert exported.status_code == 200, exported.text
    assert exported.json["user"]["external_id"] == f"era-{unique}" and exported.json["messages"] == []
    assert fields(assert_problem(await api.get(f"{path}/export?cursor=forged", server), 422)) == [
        "query.cursor"
    ]

    erased = await api.delete(path, server)
    assert erased.status_code == 202, erased.text
    job_id = erased.json["job_id"]
    assert (await api.get(f"/server/jobs/{job_id}", server)).json["status"] == "queued"
    await run_worker()
    assert (await api.get(f"/server/jobs/{job_id}", server)).json["status"] == "complete"
    # The row keeps only its id: the external id is gone with the rest.
    assert_problem(await api.get(path, server), 404)
    assert_problem(await api.get("/server/jobs/persist:nothing", server), 404)


async def test_only_a_live_server_key_opens_the_server_api_and_it_opens_nothing_else(
    api: ApiClient,
    deps: Deps,
    settings: Settings,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    name = f"backend-{unique}"
    assert await headless_chat("server-keys", "create", name) == 0
    key = as_caller(capsys.readouterr().out.strip().splitlines()[-1])
    assert key.access_token.startswith("hcsk_")
    assert await headless_chat("server-keys", "create", name) == 1  # names are unique
    path = f"/server/users/k-{unique}"
    assert (await api.put(path, key, json={})).status_code == 201

    user = await api.user()
    assert_problem(await api.get(path, user), 401)  # a user's token is no server key
    assert_problem(await api.get(path), 401)
    assert_problem(await api.get("/users/me", key), 401)  # a server key is no user's token
    assert_problem(await api.get(path, as_caller("hcsk_" + "x" * 43)), 401)

    assert await headless_chat("server-keys", "list") == 0
    listed = capsys.readouterr().out
    assert name in listed and "live" in listed and "last used 20" in listed
    assert await headless_chat("server-keys", "revoke", name) == 0
    assert_problem(await api.get(path, key), 401)  # at once
    assert await headless_chat("server-keys", "revoke", name) == 1


async def test_a_burst_with_one_key_gets_no_more_than_its_limit(
    settings: Settings, deps: Deps, unique: str
) -> None:
    key = await server_key(deps)
    async with api_with(settings, rate_limit_server_per_key="5/hour") as limited:
        answers = await asyncio.gather(*(limited.get(f"/server/users/b{i}-{unique}", key) for i in range(20)))
    assert sorted(a.status_code for a in answers) == [404] * 5 + [429] * 15
    assert all("Retry-After" in a.headers for a in answers if a.status_code == 429)


async def test_with_password_auth_off_register_and_login_are_404_and_undocumented(settings: Settings) -> None:
    async with api_with(settings, password_auth="off") as closed:
        body = {"username": f"n{uuid.uuid4().hex[:8]}", "password": "a long passphrase 1"}
        assert_problem(await closed.post("/auth/register", json=body), 404)
        assert_problem(await closed.post("/auth/login", json=body), 404)
        document = (await closed.conductor.simulate_get("/openapi.json")).json
    assert "/api/v1/auth/register" not in document["paths"] and "/api/v1/auth/login" not in document["paths"]
    assert "/api/v1/auth/refresh" in document["paths"]


async def test_an_external_id_no_app_could_have_is_404(api: ApiClient, server: TestUser) -> None:
    """Found by the fuzz suite: a NUL in the path reached Postgres (500)."""
    for forged in ("%00", "a%0Ab", "x" * 129):
        assert_problem(await api.post(f"/server/users/{forged}/reactivate", server), 404)
        assert_problem(
            await api.post(f"/server/conversations/{forged}/members", server, json={"member_ids": ["a"]}), 404
        )
