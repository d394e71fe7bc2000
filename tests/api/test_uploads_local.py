"""Attachments on local disk (no S3 configured): the signed URLs, the api's own PUT and GET of the
bytes, the whole flow; and the claim on SQLite, the dev mode's database."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from chat.domain import attachments
from chat.infra.storage import BadSignature, LocalStorage
from chat.models import Upload
from tests.support import ApiClient, assert_problem
from tests.support.settings import RunWorker
from tests.support.sqlite import sqlite_world
from tests.support.uploads import get_signed, put_signed

DATA = b"local bytes \x00\xff" * 100


def store(tmp_path: Path, secret: bytes = b"k" * 32) -> LocalStorage:
    return LocalStorage(tmp_path, secret, "", put_seconds=60, get_seconds=60)


def query(url: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in urlsplit(url).query.split("&"))


def test_signatures_bind_the_method_the_values_and_the_expiry(tmp_path: Path) -> None:
    local, key = store(tmp_path), uuid.uuid4()
    put = query(local.presign_put(key, "image/png", 10).url)
    bound = ("image/png", "10")
    local.verify("PUT", key, put["expires"], put["signature"], bound)
    for method, other_key, values in (
        ("GET", key, bound),  # a PUT URL is no download URL
        ("PUT", uuid.uuid4(), bound),  # nor another upload's
        ("PUT", key, ("text/html", "10")),  # nor for another type
        ("PUT", key, ("image/png", "11")),  # nor another size
    ):
        with pytest.raises(BadSignature, match="does not match"):
            local.verify(method, other_key, put["expires"], put["signature"], values)
    with pytest.raises(BadSignature, match="expired"):
        local.verify("PUT", key, put["expires"], put["signature"], bound, now=time.time() + 61)
    with pytest.raises(BadSignature, match="does not match"):
        store(tmp_path, b"another key" * 3).verify("PUT", key, put["expires"], put["signature"], bound)
    for expires, signature in (
        (None, put["signature"]),
        (put["expires"], None),
        ("-1", "x"),
        ("9" * 13, "x"),
    ):
        with pytest.raises(BadSignature, match="missing"):
            local.verify("PUT", key, expires, signature, bound)
    get = query(local.presign_get(key, "a b.png"))
    local.verify("GET", key, get["expires"], get["signature"], ("a b.png",))
    with pytest.raises(BadSignature):
        local.verify("GET", key, get["expires"], get["signature"], ("other.png",))


async def test_the_whole_flow_on_local_disk(api: ApiClient, run_worker: RunWorker) -> None:
    alice, bob, cid = await api.pair()
    body = {"filename": "ü.bin", "content_type": "application/octet-stream", "size": len(DATA)}
    ticket = (await api.post("/uploads", alice, json=body)).json
    url, headers = ticket["upload_url"], ticket["headers"]
    # No PUBLIC_API_URL: on the address the request came to (falcon's test client: example.com).
    assert url.startswith(f"http://falconframework.org/api/v1/uploads/{ticket['id']}/content?")
    forwarded = await api.post(
        "/uploads",
        alice,
        json=body,
        headers={"X-Forwarded-Host": "chat.example.org", "X-Forwarded-Proto": "https"},
    )
    assert forwarded.json["upload_url"].startswith("https://chat.example.org/api/v1/uploads/")

    # Refusals: a forged signature, another type, more bytes, fewer bytes; none stores anything.
    assert_problem(await put_signed(api, url.replace("signature=", "signature=0"), DATA, headers), 403)
    wrong_type = {**headers, "Content-Type": "text/html"}
    assert_problem(await put_signed(api, url, DATA, wrong_type), 422)
    assert_problem(await put_signed(api, url, DATA + b"!", {"Content-Type": headers["Content-Type"]}), 413)
    assert_problem(await put_signed(api, url, DATA[:-1], {"Content-Type": headers["Content-Type"]}), 422)
    early = await api.post(
        f"/conversations/{cid}/messages", alice, json={"body": "x", "attachments": [ticket["id"]]}
    )
    assert "not uploaded yet" in assert_problem(early, 422)["errors"][0]["message"]

    assert (await put_signed(api, url, DATA, headers)).status_code == 204
    assert_problem(await put_signed(api, url, DATA, headers), 409)  # stored bytes stay as they were checked
    sent = await api.post(
        f"/conversations/{cid}/messages", alice, json={"body": "x", "attachments": [ticket["id"]]}
    )
    assert sent.status_code == 202, sent.text
    assert await run_worker() == 1
    [attachment] = (await api.get(f"/messages/{sent.json['id']}", bob)).json["attachments"]
    assert (attachment["filename"], attachment["size"]) == ("ü.bin", len(DATA))
    got = await get_signed(api, attachment["url"])
    assert got.status_code == 200
    assert got.content == DATA
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"] == "attachment; filename*=UTF-8''%C3%BC.bin"
    assert_problem(await get_signed(api, attachment["url"].replace("filename=", "filename=x")), 403)


async def test_claims_on_sqlite_are_idempotent_and_released_only_by_their_message() -> None:
    async with sqlite_world() as world:
        ids = [uuid.uuid4(), uuid.uuid4()]
        async with world.sessions() as session:
            for n, upload_id in enumerate(ids):
                session.add(
                    Upload(
                        id=upload_id,
                        owner_id=world.user,
                        filename=f"{n}.txt",
                        content_type="text/plain",
                        size=1,
                    )
                )
            await session.commit()
        other = uuid.uuid4()
        async with world.sessions() as session:
            linked = datetime.now(UTC)  # as the worker links them, storing the message
            assert await attachments.claim(
                session, ids[::-1], world.user, world.message, linked_at=linked
            ) == set(ids)
            assert await attachments.claim(session, ids[::-1], world.user, world.message) == set(ids)  # again
            assert await attachments.claim(session, ids, world.user, other) == set()  # taken
            assert await attachments.claim(session, ids, uuid.uuid4(), world.message) == set()  # not theirs
            await attachments.release(session, ids, other)  # not its claim: nothing happens
            await session.commit()
        async with world.sessions() as session:
            found = await attachments.of(session, [world.message])
            # In the order the sender listed them.
            assert [u.id for u in found[world.message]] == ids[::-1]
            # A stored message keeps its uploads; a send that was never stored gives them back.
            await attachments.release(session, ids, world.message)
            await session.commit()
            assert [u.id for u in (await attachments.of(session, [world.message]))[world.message]] == ids[
                ::-1
            ]
            await session.execute(update(Upload).values(message_id=None, linked_at=None))
            assert await attachments.claim(session, ids, world.user, other) == set(ids)
            await attachments.release(session, ids, other)
            await session.commit()
            assert await attachments.of(session, [other]) == {}


async def test_the_sweep_on_sqlite_discards_only_what_was_not_sent_in_time(tmp_path: Path) -> None:
    local = store(tmp_path)
    async with sqlite_world() as world:
        now = datetime.now(UTC)
        old, fresh, sent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        async with world.sessions() as session:
            for upload_id, age, message in ((old, 2, None), (fresh, 0, None), (sent, 2, world.message)):
                session.add(
                    Upload(
                        id=upload_id,
                        owner_id=world.user,
                        filename="f.txt",
                        content_type="text/plain",
                        size=1,
                        created_at=now - timedelta(days=age),
                        message_id=message,
                        linked_at=now - timedelta(days=age) if message else None,
                    )
                )
                await local.write(upload_id, "text/plain", _one(b"x"), size=1)
            await session.commit()
        unsent_before = now - timedelta(days=1)
        swept = await attachments.sweep(
            world.sessions, local, now=now, unsent_before=unsent_before, urls_expired_before=now
        )
        assert swept == 1
        assert [await local.head(i) is None for i in (old, fresh, sent)] == [True, False, False]
        async with world.sessions() as session:
            assert {u.id for u in await session.scalars(select(Upload))} == {fresh, sent}


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
