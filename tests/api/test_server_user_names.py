"""The username `PUT /server/users/{external_id}` asks for is the user's, or a 409: never quietly
another one, whether the user is new or not."""

from __future__ import annotations

from api.deps import Deps
from tests.support import ApiClient, assert_problem
from tests.support.serverapi import server_key


async def test_a_taken_username_is_409_for_a_new_user_too(api: ApiClient, deps: Deps, unique: str) -> None:
    server = await server_key(deps)
    taken = (await api.user()).username
    refused = await api.put(f"/server/users/new-{unique}", server, json={"username": taken.upper()})
    assert_problem(refused, 409)
    assert_problem(await api.get(f"/server/users/new-{unique}", server), 404)  # nothing made

    made = await api.put(f"/server/users/new-{unique}", server, json={"username": f"free{unique}"})
    assert made.status_code == 201 and made.json["username"] == f"free{unique}", made.text
    assert_problem(await api.put(f"/server/users/new-{unique}", server, json={"username": taken}), 409)


async def test_asking_again_for_the_users_own_username_is_no_conflict(
    api: ApiClient, deps: Deps, unique: str
) -> None:
    server = await server_key(deps)
    path, body = f"/server/users/same-{unique}", {"username": f"Same{unique}"}
    assert (await api.put(path, server, json=body)).status_code == 201
    again = await api.put(path, server, json=body)
    assert again.status_code == 200 and again.json["username"] == f"Same{unique}", again.text
    # Another case of the same name is still theirs: a rename, not a conflict.
    lower = await api.put(path, server, json={"username": f"same{unique}"})
    assert lower.status_code == 200 and lower.json["username"] == f"same{unique}", lower.text


async def test_an_external_id_in_a_body_is_one_a_path_could_name(
    api: ApiClient, deps: Deps, unique: str
) -> None:
    server = await server_key(deps)
    """1-128 printable characters, as an app token's `sub` and a path's external id: a tab or a
    newline is a 422, not a user no other call can reach."""
    for forged in (f"a\tb{unique}", f"a\nb{unique}", "x" * 129, ""):
        refused = assert_problem(await api.post("/server/tokens", server, json={"external_id": forged}), 422)
        assert [e["field"] for e in refused["errors"]] == ["body.external_id"], forged
    made = await api.post("/server/tokens", server, json={"external_id": f"ok é {unique}"})
    assert made.status_code == 200, made.text
