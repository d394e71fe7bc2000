"""Sends as the api sees them: validation and what Postgres could not store, before any worker."""

from __future__ import annotations

import uuid

from tests.support import ApiClient, assert_problem


async def test_send_validation(api: ApiClient) -> None:
    alice, _, cid = await api.pair()
    path = f"/conversations/{cid}/messages"
    for body in (
        {"body": ""},
        {"body": "  \n "},
        {"body": "x" * 4001},
        {},
        {"body": 5},
        {"body": "ok", "client_id": ""},
        {"body": "ok", "client_id": "c" * 65},
    ):
        assert_problem(await api.post(path, alice, json=body), 422)
    assert (await api.post(path, alice, json={"body": "x" * 4000})).status_code == 202
    assert_problem(
        await api.post(path, alice, body=b"not json", headers={"Content-Type": "application/json"}), 400
    )
    assert_problem(await api.post(path, alice, body=b"body=hi", headers={"Content-Type": "text/plain"}), 400)
    assert_problem(await api.post(path, json={"body": "hi"}), 401)
    assert_problem(await api.post(f"/conversations/{uuid.uuid4()}/messages", alice, json={"body": "hi"}), 404)
    assert_problem(await api.get(f"/messages/{uuid.uuid4()}", alice), 404)


async def test_inputs_postgres_cannot_store_are_422_not_500(api: ApiClient) -> None:
    alice, bob, cid = await api.pair()
    assert_problem(await api.post(f"/conversations/{cid}/messages", alice, json={"body": "a\u0000b"}), 422)
    assert_problem(
        await api.post(f"/conversations/{cid}/messages", alice, json={"body": "ok", "client_id": "\u0000"}),
        422,
    )
    title = {"kind": "group", "title": "t\u0000", "participant_ids": [bob.id]}
    assert_problem(await api.post("/conversations", alice, json=title), 422)
    for query in ("before=99999999999", "after=2147483648"):
        assert_problem(await api.get(f"/conversations/{cid}/messages", alice, query_string=query), 422)
    assert_problem(await api.post(f"/conversations/{cid}/read", alice, json={"seq": 2**40}), 422)
