"""The server API keeps the api's conventions: a 201 or 202 names what it made in `Location` (as
the document says it does), and the 429 every server call can get is in the document."""

from __future__ import annotations

from urllib.parse import quote

from api.deps import Deps
from tests.support import PREFIX, ApiClient, TestUser
from tests.support.serverapi import server_key


def relative(location: str) -> str:
    assert location.startswith(PREFIX), location
    return location.removeprefix(PREFIX)


async def test_a_made_user_and_a_queued_erasure_are_named_in_location(
    api: ApiClient, deps: Deps, unique: str
) -> None:
    server: TestUser = await server_key(deps)
    external_id = f"app user {unique}?#"  # an app's id may hold what a path must escape
    path = f"/server/users/{quote(external_id, safe='')}"
    made = await api.put(path, server, json={"display_name": "Loc"})
    assert made.status_code == 201, made.text
    found = await api.get(relative(made.headers["location"]), server)
    assert found.status_code == 200 and found.json["external_id"] == external_id, found.text
    assert "location" not in (await api.put(path, server, json={})).headers  # updated, not made

    erased = await api.delete(path, server)
    assert erased.status_code == 202, erased.text
    job = await api.get(relative(erased.headers["location"]), server)
    assert job.status_code == 200 and job.json["id"] == erased.json["job_id"], job.text


async def test_every_server_operation_documents_its_rate_limit(api: ApiClient) -> None:
    document = (await api.conductor.simulate_get("/openapi.json")).json
    server = {
        (method, path): operation
        for path, operations in document["paths"].items()
        if path.startswith(f"{PREFIX}/server/")
        for method, operation in operations.items()
    }
    assert len(server) >= 8
    undocumented = sorted(key for key, operation in server.items() if "429" not in operation["responses"])
    assert undocumented == []
