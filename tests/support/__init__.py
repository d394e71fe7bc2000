"""A thin client over the api for tests: register and log in users, send authenticated requests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from falcon.testing import ASGIConductor, Result

PREFIX = "/api/v1"
PASSWORD = "correct horse battery"
# What GET /users/{id} answers (CONTRACT: the user object, with presence).
PROFILE_FIELDS = {"id", "username", "display_name", "created_at", "external_id", "online", "last_seen_at"}


@dataclass
class TestUser:
    __test__ = False

    id: str
    username: str
    access_token: str
    refresh_token: str
    headers: dict[str, str] = field(default_factory=dict)


class ApiClient:
    def __init__(self, conductor: ASGIConductor) -> None:
        self.conductor = conductor

    async def request(
        self,
        method: str,
        path: str,
        user: TestUser | None = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Result:
        merged = dict(headers or {})
        if user is not None:
            merged.setdefault("Authorization", f"Bearer {user.access_token}")
        result: Result = await self.conductor.simulate_request(method, PREFIX + path, headers=merged, **kw)
        return result

    async def get(self, path: str, user: TestUser | None = None, **kw: Any) -> Result:
        return await self.request("GET", path, user, **kw)

    async def post(self, path: str, user: TestUser | None = None, **kw: Any) -> Result:
        return await self.request("POST", path, user, **kw)

    async def put(self, path: str, user: TestUser | None = None, **kw: Any) -> Result:
        return await self.request("PUT", path, user, **kw)

    async def patch(self, path: str, user: TestUser | None = None, **kw: Any) -> Result:
        return await self.request("PATCH", path, user, **kw)

    async def delete(self, path: str, user: TestUser | None = None, **kw: Any) -> Result:
        return await self.request("DELETE", path, user, **kw)

    async def user(self, name: str | None = None, password: str = PASSWORD) -> TestUser:
        """Register and log in a new user."""
        username = name or f"u{uuid.uuid4().hex[:10]}"
        reg = await self.post("/auth/register", json={"username": username, "password": password})
        assert reg.status_code == 201, reg.text
        login = await self.post("/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200, login.text
        tokens = login.json
        return TestUser(reg.json["id"], username, tokens["access_token"], tokens["refresh_token"])

    async def pair(self) -> tuple[TestUser, TestUser, str]:
        """Two new users and the id of the direct conversation between them."""
        first, second = await self.user(), await self.user()
        cid: str = (await self.conversation(first, second, kind="direct"))["id"]
        return first, second, cid

    async def conversation(self, owner: TestUser, *others: TestUser, kind: str = "group") -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "participant_ids": [o.id for o in others]}
        if kind == "group":
            body["title"] = "test group"
        result = await self.post("/conversations", owner, json=body)
        assert result.status_code in (200, 201), result.text
        conversation: dict[str, Any] = result.json
        return conversation


def assert_problem(result: Result, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status."""
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/problem+json"), result.headers
    body: dict[str, Any] = result.json
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body
