"""Register, login, refresh, logout and the user calls, through the real ASGI app on Postgres."""

from __future__ import annotations

import uuid

from tests.support import PASSWORD, PROFILE_FIELDS, ApiClient, assert_problem


async def test_register_returns_the_user_and_never_the_password(api: ApiClient) -> None:
    result = await api.post("/auth/register", json={"username": "Alice.B-1_", "password": "long enough"})
    assert result.status_code == 201, result.text
    user = result.json
    assert set(user) == {"id", "username", "display_name", "created_at", "external_id"}
    assert user["external_id"] is None  # a built-in account
    assert user["username"] == "Alice.B-1_" and user["display_name"] == "Alice.B-1_"
    assert result.headers["location"] == f"/api/v1/users/{user['id']}"
    assert "long enough" not in result.text and "argon2" not in result.text
    named = await api.post(
        "/auth/register", json={"username": "bob", "password": "long enough", "display_name": "Bob B"}
    )
    assert named.json["display_name"] == "Bob B"


async def test_register_validation_and_conflicts(api: ApiClient) -> None:
    await api.user("carol")
    for name in ("CAROL", "Carol"):
        assert_problem(await api.post("/auth/register", json={"username": name, "password": PASSWORD}), 409)
    bad = [
        {"username": "ab", "password": PASSWORD},
        {"username": "x" * 33, "password": PASSWORD},
        {"username": "has space", "password": PASSWORD},
        {"username": "émile", "password": PASSWORD},
        {"username": "dave", "password": "short"},
        {"username": "dave", "password": "x" * 129},
        {"username": "dave"},
        {"password": PASSWORD},
        {"username": 123, "password": PASSWORD},
        {"username": "dave", "password": PASSWORD, "display_name": "   "},
        {"username": "dave", "password": PASSWORD, "display_name": "x" * 65},
    ]
    for body in bad:
        problem = assert_problem(await api.post("/auth/register", json=body), 422)
        assert problem["errors"] and all(e["field"].startswith("body") for e in problem["errors"])
    problem = assert_problem(
        await api.post("/auth/register", json={"username": "dave", "password": "short"}), 422
    )
    assert [e["field"] for e in problem["errors"]] == ["body.password"]
    assert (
        await api.post("/auth/register", json={"username": "dave", "password": "x" * 128})
    ).status_code == 201


async def test_login_json_and_form(api: ApiClient) -> None:
    user = await api.user("erin")
    for kwargs in (
        {"json": {"username": "erin", "password": PASSWORD}},
        {
            "body": f"username=ERIN&password={PASSWORD.replace(' ', '+')}".encode(),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
    ):
        result = await api.post("/auth/login", **kwargs)
        assert result.status_code == 200, result.text
        tokens = result.json
        assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
        me = await api.get("/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.json["id"] == user.id
    for body in (
        {"username": "erin", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
    ):
        problem = assert_problem(await api.post("/auth/login", json=body), 401)
        assert problem["detail"] == "Wrong username or password."
    assert_problem(await api.post("/auth/login", json={"username": "erin"}), 422)
    assert_problem(
        await api.post("/auth/login", body=b"{", headers={"Content-Type": "application/json"}), 400
    )


async def test_refresh_rotates_and_reuse_revokes_the_login(api: ApiClient) -> None:
    user = await api.user()
    other_login = (await api.post("/auth/login", json={"username": user.username, "password": PASSWORD})).json
    first = user.refresh_token
    rotated = await api.post("/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json["refresh_token"]
    assert second != first and rotated.json["access_token"] != user.access_token
    third = (await api.post("/auth/refresh", json={"refresh_token": second})).json["refresh_token"]
    # The first token comes back: someone kept a copy. The whole login ends, newest token included.
    assert_problem(await api.post("/auth/refresh", json={"refresh_token": first}), 401)
    assert_problem(await api.post("/auth/refresh", json={"refresh_token": third}), 401)
    # Another login of the same user is not affected.
    assert (
        await api.post("/auth/refresh", json={"refresh_token": other_login["refresh_token"]})
    ).status_code == 200
    for body in ({"refresh_token": "garbage"}, {"refresh_token": ""}, {}):
        assert (await api.post("/auth/refresh", json=body)).status_code in (401, 422)
    assert_problem(await api.post("/auth/refresh", json={"refresh_token": "garbage"}), 401)


async def test_logout_revokes_the_refresh_token(api: ApiClient) -> None:
    user = await api.user()
    assert_problem(
        await api.post("/auth/logout", json={"refresh_token": user.refresh_token}), 401
    )  # needs Bearer
    result = await api.post("/auth/logout", user, json={"refresh_token": user.refresh_token})
    assert result.status_code == 204 and result.content == b""
    assert_problem(await api.post("/auth/refresh", json={"refresh_token": user.refresh_token}), 401)
    assert (await api.post("/auth/logout", user, json={"refresh_token": "unknown"})).status_code == 204
    # Someone else's token is not revoked by my logout.
    other = await api.user()
    assert (
        await api.post("/auth/logout", user, json={"refresh_token": other.refresh_token})
    ).status_code == 204
    assert (await api.post("/auth/refresh", json={"refresh_token": other.refresh_token})).status_code == 200


async def test_me_get_and_patch(api: ApiClient) -> None:
    user = await api.user()
    me = await api.get("/users/me", user)
    assert me.json["username"] == user.username
    changed = await api.patch("/users/me", user, json={"display_name": "  New Name "})
    assert changed.status_code == 200 and changed.json["display_name"] == "New Name"
    assert (await api.get("/users/me", user)).json["display_name"] == "New Name"
    for body in (
        {"display_name": ""},
        {"display_name": "   "},
        {"display_name": "x" * 65},
        {},
        {"display_name": "a\u0000"},
    ):
        assert_problem(await api.patch("/users/me", user, json=body), 422)
    assert_problem(await api.patch("/users/me", json={"display_name": "x"}), 401)


async def test_user_search_and_profiles(api: ApiClient) -> None:
    viewer = await api.user()
    for name in ("zed_a", "Zed_b", "zedc", "zex", "zed_d"):
        await api.user(name)
    found = await api.get("/users", viewer, query_string="q=ZED_")
    assert [u["username"] for u in found.json["items"]] == ["zed_a", "Zed_b", "zed_d"]
    assert found.json["next_cursor"] is None
    # `_` and `%` are literal, not wildcards.
    assert (await api.get("/users", viewer, query_string="q=z%25")).json["items"] == []
    names: list[str] = []
    cursor = ""
    while True:
        page = await api.get("/users", viewer, query_string=f"q=ze&limit=2&cursor={cursor}")
        assert len(page.json["items"]) <= 2
        names += [u["username"] for u in page.json["items"]]
        if page.json["next_cursor"] is None:
            break
        cursor = page.json["next_cursor"]
    assert names == ["zed_a", "Zed_b", "zed_d", "zedc", "zex"]
    for query in ("limit=0", "limit=201", "limit=x", "cursor=%%%"):
        assert_problem(await api.get("/users", viewer, query_string=query), 422)

    profile = await api.get(f"/users/{viewer.id}", viewer)
    assert profile.status_code == 200
    assert set(profile.json) == PROFILE_FIELDS
    assert profile.json["online"] is False and profile.json["last_seen_at"] is None
    assert_problem(await api.get(f"/users/{uuid.uuid4()}", viewer), 404)
    assert_problem(await api.get("/users/not-a-uuid", viewer), 404)
    assert_problem(await api.get(f"/users/{viewer.id}"), 401)
