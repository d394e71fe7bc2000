"""An attachment end to end: the Procfile's web, worker and push processes on moto's S3; a
WebSocket client receives `message.created` with the attachment and downloads it."""

from __future__ import annotations

import httpx
import pytest

from tests.support.s3 import S3Server
from tests.support.sockets import frames_until, pair_online
from tests.support.stack import Client, Process, Stack

DATA = b"an attachment, end to end\n" * 40


@pytest.fixture(scope="module")
def s3_stack(stack: Stack, s3: S3Server) -> Stack:
    # Only web and the worker touch the store; push never loads boto3.
    for kind in ("web", "worker"):
        stack.start(kind, wait=True, **s3.env())
    stack.start("push")
    stack.start("push")
    return stack


@pytest.fixture
def web(s3_stack: Stack) -> Process:
    return next(p for p in s3_stack.processes if p.name == "web")


async def test_a_websocket_client_receives_the_attachment_and_downloads_it(
    client: Client, s3_stack: Stack
) -> None:
    async with pair_online(client, s3_stack) as p:
        body = {"filename": "e2e.txt", "content_type": "text/plain", "size": len(DATA)}
        ticket = (await client.http.post("/uploads", json=body, headers=p.alice["headers"])).json()
        async with httpx.AsyncClient() as http:
            put = await http.put(ticket["upload_url"], content=DATA, headers=ticket["headers"])
            assert put.status_code == 200, put.text
            sent = await client.http.post(
                f"/conversations/{p.cid}/messages",
                json={"body": "file", "attachments": [ticket["id"]]},
                headers=p.alice["headers"],
            )
            assert sent.status_code == 202, sent.text
            [created] = await frames_until(p.bob_ws, 1)
            [attachment] = created["data"]["attachments"]
            assert (attachment["id"], attachment["filename"], attachment["size"]) == (
                ticket["id"],
                "e2e.txt",
                len(DATA),
            )
            got = await http.get(attachment["url"])
        assert got.status_code == 200 and got.content == DATA
        assert got.headers["content-type"] == "text/plain"
