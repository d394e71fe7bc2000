"""The README's run command on a machine with no Postgres and no Redis configured."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

from tests.support.protocol import check_frame
from tests.support.stack import dev_server


async def test_dev_mode_serves_the_whole_contract(tmp_path: Path) -> None:
    with dev_server(tmp_path) as dev:
        assert f"{dev.api}/api/v1" in dev.log.read_text()
        assert (tmp_path / "headless-chat.db").exists()

        async with httpx.AsyncClient(base_url=f"{dev.api}/api/v1", timeout=10) as http:
            users = []
            for name in ("dev_alice", "dev_bob"):
                assert (
                    await http.post("/auth/register", json={"username": name, "password": "password-1"})
                ).status_code == 201
                token = (
                    await http.post("/auth/login", json={"username": name, "password": "password-1"})
                ).json()
                me = (
                    await http.get("/users/me", headers={"Authorization": f"Bearer {token['access_token']}"})
                ).json()
                users.append((me["id"], token["access_token"]))
            (_, alice_token), (bob_id, bob_token) = users
            alice = {"Authorization": f"Bearer {alice_token}"}
            conv = await http.post(
                "/conversations", json={"kind": "direct", "participant_ids": [bob_id]}, headers=alice
            )
            assert conv.status_code == 201, conv.text
            cid = conv.json()["id"]
            async with connect(f"{dev.push}/ws?token={bob_token}") as ws:
                ready = check_frame(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
                assert ready["type"] == "ready" and ready["user_id"] == bob_id
                sent = await http.post(
                    f"/conversations/{cid}/messages", json={"body": "hi from dev"}, headers=alice
                )
                assert sent.status_code == 202, sent.text
                while True:
                    event = check_frame(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
                    if event["type"] == "message.created":
                        break
                assert event["data"]["body"] == "hi from dev" and event["data"]["id"] == sent.json()["id"]
            history = await http.get(
                f"/conversations/{cid}/messages", headers={"Authorization": f"Bearer {bob_token}"}
            )
            assert [m["body"] for m in history.json()["items"]] == ["hi from dev"]
            found = await http.get("/search/messages", params={"q": "FROM"}, headers=alice)
            assert [m["id"] for m in found.json()["items"]] == [sent.json()["id"]]
            readiness = await http.get("/readyz")
            assert readiness.status_code == 200
            # Neither server announces itself.
            assert "server" not in readiness.headers
            assert "server" not in (await http.get(dev.push.replace("ws:", "http:", 1) + "/healthz")).headers
            async with connect(f"{dev.push}/ws?token={bob_token}") as ws:
                assert ws.response is not None and "server" not in ws.response.headers
            # The operator's command line works beside the dev server with nothing set.
            granted = subprocess.run(
                [sys.executable, "-m", "chat.cli", "make-admin", "dev_alice"],
                cwd=tmp_path,
                env={"PATH": os.environ["PATH"]},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert granted.returncode == 0, granted.stderr
            assert "dev database" in granted.stderr and "admin=yes" in granted.stdout
            queue = await http.get("/admin/queue", headers=alice)
            assert queue.status_code == 200, queue.text
