"""The README's run command on a machine with no Postgres and no Redis configured."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

from tests.support.protocol import check_frame
from tests.support.stack import free_port


async def test_dev_mode_serves_the_whole_contract(tmp_path: Path) -> None:
    api_port, push_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ENVIRONMENT"}
    }
    env |= {"API_PORT": str(api_port), "PUSH_PORT": str(push_port)}
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "devserver"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while f"ws://127.0.0.1:{push_port}/ws" not in log.read_text():
            assert dev.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        assert re.search(rf"http://127\.0\.0\.1:{api_port}/api/v1", log.read_text())
        assert (tmp_path / "headless-chat.db").exists()

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}/api/v1", timeout=10) as http:
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
            async with connect(f"ws://127.0.0.1:{push_port}/ws?token={bob_token}") as ws:
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
            readiness = await http.get("/readyz")
            assert readiness.status_code == 200
            # Neither server announces itself.
            assert "server" not in readiness.headers
            assert "server" not in (await http.get(f"http://127.0.0.1:{push_port}/healthz")).headers
            async with connect(f"ws://127.0.0.1:{push_port}/ws?token={bob_token}") as ws:
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
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        assert dev.wait(15) == 0, log.read_text()
