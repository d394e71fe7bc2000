"""Problem details for every failure, and no input that produces a 5xx."""

from __future__ import annotations

import uuid

from tests.support import ApiClient, assert_problem


async def test_malformed_bodies(api: ApiClient) -> None:
    path = "/auth/register"
    assert_problem(await api.post(path, body=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert_problem(await api.post(path, body=b"", headers={"Content-Type": "application/json"}), 400)
    assert_problem(
        await api.post(path, body=b'{"username": "x"}', headers={"Content-Type": "text/plain"}), 400
    )
    assert_problem(
        await api.post(
            path, body=b"username=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ),
        400,
    )
    problem = assert_problem(await api.post(path, json=[1, 2]), 422)
    assert problem["errors"][0]["field"] == "body"
    big = b'{"username": "' + b"x" * (64 * 1024) + b'"}'
    assert_problem(await api.post(path, body=big, headers={"Content-Type": "application/json"}), 413)


async def test_unknown_routes_and_methods(api: ApiClient) -> None:
    user = await api.user()
    assert_problem(await api.get("/nothing/here", user), 404)
    assert_problem(await api.conductor.simulate_get("/nothing"), 404)
    assert_problem(await api.request("PUT", "/users/me", user, json={}), 405)
    assert_problem(await api.get(f"/messages/{uuid.uuid4()}", user), 404)
    assert_problem(await api.get("/jobs/whatever", user), 404)


async def test_junk_never_causes_a_server_error(api: ApiClient) -> None:
    user = await api.user()
    other = await api.user()
    conv = await api.conversation(user, other)
    junk_bodies: list[bytes] = [
        b"null",
        b"true",
        b"1",
        b'"text"',
        b"[]",
        b'{"a":' * 200 + b"1" + b"}" * 200,
        b'{"username": "\\ud800"}',
        b'{"body": {"nested": 1}}',
        b'{"body": null}',
        b'{"seq": 1e309}',
        b'{"user_ids": "x"}',
        b"\xff\xfe",
    ]
    paths = [
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("PATCH", "/users/me"),
        ("POST", "/conversations"),
        ("POST", f"/conversations/{conv['id']}/messages"),
        ("POST", f"/conversations/{conv['id']}/participants"),
        ("POST", f"/conversations/{conv['id']}/read"),
    ]
    for method, path in paths:
        for body in junk_bodies:
            result = await api.request(
                method, path, user, body=body, headers={"Content-Type": "application/json"}
            )
            assert result.status_code < 500, (method, path, body[:40], result.text)
            assert result.headers["content-type"].startswith("application/problem+json")
    for query in ("limit=1e3", "cursor=" + "A" * 500, "q=" + "%00", "before=%00", "limit=-0"):
        for path in ("/users", "/conversations", f"/conversations/{conv['id']}/messages"):
            assert (await api.get(path, user, query_string=query)).status_code < 500, (path, query)
