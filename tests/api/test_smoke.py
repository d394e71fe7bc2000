from __future__ import annotations

from tests.support import ApiClient


async def test_register_login_me(api: ApiClient) -> None:
    alice = await api.user()
    me = await api.get("/users/me", alice)
    assert me.status_code == 200
    assert me.json["username"] == alice.username
