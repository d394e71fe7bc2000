"""`/admin/webhooks`: registering, listing and deleting, who may, and what is refused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from api.deps import Deps
from chat.cli import set_admin
from chat.domain import webhooks
from tests.support import ApiClient, TestUser, assert_problem

URL = "https://hooks.example.com/chat?team=1"


async def _admin(api: ApiClient, deps: Deps) -> TestUser:
    admin = await api.user()
    assert await set_admin(deps.settings, admin.username, True)
    return admin


async def test_register_list_and_delete(api: ApiClient, deps: Deps) -> None:
    admin = await _admin(api, deps)
    version = await deps.redis.get(webhooks.VERSION_KEY)
    generated = await api.post("/admin/webhooks", admin, json={"url": URL, "events": ["message.created"]})
    assert generated.status_code == 201, generated.text
    hook = generated.json
    assert set(hook) == {"id", "url", "events", "secret", "created_at"}
    assert (hook["url"], hook["events"]) == (URL, ["message.created"])
    assert len(hook["secret"]) >= 40  # secrets.token_urlsafe(32)
    assert generated.headers["location"] == f"/api/v1/admin/webhooks/{hook['id']}"
    # Every process's cached list learns of the change through the version key.
    assert await deps.redis.get(webhooks.VERSION_KEY) != version

    body = {
        "url": "http://10.0.0.5:8080/in",
        "events": ["reaction.added", "reaction.added"],
        "secret": "s" * 16,
    }
    given = (await api.post("/admin/webhooks", admin, json=body)).json
    assert given["secret"] == "s" * 16 and given["events"] == ["reaction.added"]

    listed = await api.get("/admin/webhooks", admin)
    assert listed.status_code == 200
    assert listed.json == {"items": [hook, given]}
    # The Location of a registration reads back the same webhook.
    assert (await api.get(generated.headers["location"].removeprefix("/api/v1"), admin)).json == hook

    assert (await api.delete(f"/admin/webhooks/{hook['id']}", admin)).status_code == 204
    assert_problem(await api.get(f"/admin/webhooks/{hook['id']}", admin), 404)
    assert_problem(await api.delete(f"/admin/webhooks/{hook['id']}", admin), 404)
    assert_problem(await api.delete(f"/admin/webhooks/{uuid.uuid4()}", admin), 404)
    assert_problem(await api.delete("/admin/webhooks/not-an-id", admin), 404)
    assert (await api.get("/admin/webhooks", admin)).json == {"items": [given]}


async def test_only_admins(api: ApiClient, deps: Deps) -> None:
    admin, member = await _admin(api, deps), await api.user()
    hook = (await api.post("/admin/webhooks", admin, json={"url": URL, "events": ["message.created"]})).json
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/admin/webhooks", {}),
        ("POST", "/admin/webhooks", {"json": {"url": URL, "events": ["message.created"]}}),
        ("DELETE", f"/admin/webhooks/{hook['id']}", {}),
    ]
    for method, path, kw in calls:
        assert_problem(await api.request(method, path, **kw), 401)
        assert_problem(await api.request(method, path, member, **kw), 403)
    assert [h["id"] for h in (await api.get("/admin/webhooks", admin)).json["items"]] == [hook["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["message.created"]}, "body.url"),
        ({"url": "/relative/path", "events": ["message.created"]}, "body.url"),
        ({"url": "https://", "events": ["message.created"]}, "body.url"),
        ({"url": "http://example.com:99999/", "events": ["message.created"]}, "body.url"),
        ({"url": " https://example.com/", "events": ["message.created"]}, "body.url"),
        ({"url": "https://example.com/" + "a" * 2048, "events": ["message.created"]}, "body.url"),
        ({"events": ["message.created"]}, "body.url"),
        ({"url": URL, "events": []}, "body.events"),
        ({"url": URL, "events": ["message.exploded"]}, "body.events"),
        ({"url": URL, "events": ["typing"]}, "body.events"),
        ({"url": URL, "events": "message.created"}, "body.events"),
        ({"url": URL}, "body.events"),
        ({"url": URL, "events": ["message.created"], "secret": "too short"}, "body.secret"),
    ],
)
async def test_invalid_fields_are_422_naming_the_field(
    api: ApiClient, deps: Deps, body: dict[str, Any], field: str
) -> None:
    admin = await _admin(api, deps)
    problem = assert_problem(await api.post("/admin/webhooks", admin, json=body), 422)
    assert [e["field"] for e in problem["errors"]] == [field], problem
    assert (await api.get("/admin/webhooks", admin)).json == {"items": []}


def test_every_durable_event_type_can_be_subscribed_to() -> None:
    assert set(webhooks.EVENT_TYPES) == {
        "message.created",
        "message.updated",
        "message.deleted",
        "reaction.added",
        "reaction.removed",
        "conversation.created",
        "participant.added",
        "participant.removed",
        "conversation.read",
    }
