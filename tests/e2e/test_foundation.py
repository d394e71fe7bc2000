"""A fresh database, the Procfile's release line, then its web line: a client needs nothing else."""

from __future__ import annotations

import httpx

from tests.support import services
from tests.support.stack import Stack, stack_env


def test_release_then_web_serves_register_login_me(stack: Stack) -> None:
    name = services.create_database()
    try:
        fresh = Stack(stack_env(services.database_url(name)), stack.logs)
        released = fresh.run("release")
        assert released.returncode == 0, released.stderr.decode()
        web = fresh.start("web")
        try:
            with httpx.Client(base_url=web.url + "/api/v1") as http:
                body = {"username": "first_user", "password": "s3cret-pass"}
                assert (http.post("/auth/register", json=body)).status_code == 201
                login = http.post("/auth/login", data=body)  # form-encoded, as OAuth2 clients send
                assert login.status_code == 200, login.text
                me = http.get(
                    "/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
                )
                assert me.status_code == 200 and me.json()["username"] == "first_user"
                ready = http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert "server" not in ready.headers  # no banner
            # A WebSocket opened on the api, not the push process: a clean 404 problem.
            refused = httpx.get(
                web.url + "/ws",
                headers={
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            )
            assert refused.status_code == 404, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert "push process" in refused.json()["detail"]
        finally:
            fresh.stop_all()
    finally:
        services.drop_database(name)


def test_weak_secret_stops_startup(stack: Stack) -> None:
    web = stack.start("web", wait=False, SECRET_KEY="short")
    assert web.popen.wait(30) != 0
    assert "SECRET_KEY" in web.output()
