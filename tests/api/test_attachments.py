"""Attachments on S3 (moto's server): POST /uploads, the PUT to the presigned URL, sends that name
uploads, the worker's check and link, and the attachments every message read carries."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from falcon.testing import Result
from sqlalchemy import update

from api.deps import Deps
from chat.cli import set_admin
from chat.domain import attachments
from chat.infra.s3storage import S3Storage
from chat.infra.storage import StorageUnavailable
from chat.jobqueue import deadletters
from chat.jobqueue.jobs import PERSIST_MESSAGE, PersistMessage
from chat.models import Upload
from chat.realtime.events import MessageCreated, MessageDeleted, MessageUpdated
from chat.settings import Settings
from tests.support import ApiClient, TestUser, assert_problem
from tests.support.messages import stream
from tests.support.s3 import S3Server
from tests.support.settings import RunWorker, make_settings
from workers import sweeper
from workers.main import create_worker

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
TEXT = b"hello, attachments\n"


@pytest.fixture
def settings(settings: Settings, s3: S3Server) -> Settings:
    return make_settings(database_url=settings.database_url, redis_url=settings.redis_url, **s3.settings())


async def announce(
    api: ApiClient, user: TestUser, size: int, *, filename: str = "cat.png", content_type: str = "image/png"
) -> dict[str, Any]:
    created = await api.post(
        "/uploads", user, json={"filename": filename, "content_type": content_type, "size": size}
    )
    assert created.status_code == 201, created.text
    ticket: dict[str, Any] = created.json
    return ticket


async def upload(
    api: ApiClient, user: TestUser, data: bytes, *, filename: str = "cat.png", content_type: str = "image/png"
) -> str:
    """Announce a file and PUT its bytes to the presigned URL, as a client does; its upload id."""
    ticket = await announce(api, user, len(data), filename=filename, content_type=content_type)
    assert ticket["method"] == "PUT"
    expected = {"Content-Type": content_type, "Content-Length": str(len(data)), "If-None-Match": "*"}
    assert ticket["headers"] == expected
    async with httpx.AsyncClient() as http:
        put = await http.put(ticket["upload_url"], content=data, headers=ticket["headers"])
        assert put.status_code == 200, put.text
        # Stored bytes stay as they were checked: the same URL cannot replace them.
        again = await http.put(ticket["upload_url"], content=b"x" * len(data), headers=ticket["headers"])
        assert again.status_code == 412, again.text
    upload_id: str = ticket["id"]
    return upload_id


async def send(api: ApiClient, user: TestUser, cid: str, files: list[Any], **more: Any) -> Result:
    return await api.post(
        f"/conversations/{cid}/messages", user, json={"body": "see", "attachments": files, **more}
    )


async def download(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


async def test_a_message_carries_its_attachments_on_every_read_and_event(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    picture = await upload(api, alice, PNG)
    note = await upload(api, alice, TEXT, filename="notes 2026 é.txt", content_type="text/plain")
    sent = await send(api, alice, cid, [note, picture])  # shown in the order the sender listed
    assert sent.status_code == 202, sent.text
    message_id = sent.json["id"]
    assert await run_worker() == 1

    expected = [
        (note, "notes 2026 é.txt", "text/plain", len(TEXT)),
        (picture, "cat.png", "image/png", len(PNG)),
    ]

    def described(files: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
        return [(f["id"], f["filename"], f["content_type"], f["size"]) for f in files]

    [item] = (await api.get(f"/conversations/{cid}/messages", bob)).json["items"]
    assert described(item["attachments"]) == expected
    single = (await api.get(f"/messages/{message_id}", bob)).json
    assert described(single["attachments"]) == expected
    conversation = (await api.get(f"/conversations/{cid}", bob)).json
    assert described(conversation["last_message"]["attachments"]) == expected
    for attachment, data in zip(single["attachments"], (TEXT, PNG), strict=True):
        got = await download(attachment["url"])
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["content-type"] == attachment["content_type"]

    # A reply with an attachment, in the thread listing.
    reply_file = await upload(api, bob, TEXT, filename="reply.txt", content_type="text/plain")
    replied = await send(api, bob, cid, [reply_file], reply_to=message_id)
    assert replied.status_code == 202, replied.text
    await run_worker()
    thread = (await api.get(f"/conversations/{cid}/messages?thread={message_id}", alice)).json["items"]
    assert [described(m["attachments"]) for m in thread] == [
        [(reply_file, "reply.txt", "text/plain", len(TEXT))]
    ]

    # Edited: still there; deleted: gone from every read and from the event.
    assert (await api.patch(f"/messages/{message_id}", alice, json={"body": "edited"})).status_code == 202
    await run_worker()
    assert (await api.delete(f"/messages/{message_id}", alice)).status_code == 202
    await run_worker()
    assert (await api.get(f"/messages/{message_id}", bob)).json["attachments"] == []
    for user in (alice, bob):
        events = await stream(deps.redis, user.id)
        [created] = [e for e in events if isinstance(e, MessageCreated) and str(e.data.id) == message_id]
        assert [(str(a.id), a.filename, a.content_type, a.size) for a in created.data.attachments] == expected
        assert (await download(created.data.attachments[1].url)).content == PNG
        [updated] = [e for e in events if isinstance(e, MessageUpdated)]
        assert [str(a.id) for a in updated.data.attachments] == [note, picture]
        [deleted] = [e for e in events if isinstance(e, MessageDeleted)]
        assert deleted.data.attachments == []
    # Messages without attachments say so.
    plain = await api.post(f"/conversations/{cid}/messages", alice, json={"body": "no files"})
    await run_worker()
    assert (await api.get(f"/messages/{plain.json['id']}", alice)).json["attachments"] == []


async def test_a_send_takes_only_the_senders_uploaded_free_uploads(
    api: ApiClient, s3: S3Server, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    eve = await api.user()

    def refused(result: Any, fragment: str) -> None:
        problem = assert_problem(result, 422)
        [error] = problem["errors"]
        assert error["field"] == "body.attachments", problem
        assert fragment in error["message"], problem

    mine = await upload(api, alice, TEXT, content_type="text/plain")
    bobs = await upload(api, bob, TEXT, content_type="text/plain")
    refused(await send(api, alice, cid, [bobs]), "No upload")
    refused(await send(api, alice, cid, ["6f1c1d52-8d0e-4c1e-9a55-2f9b1f4b7e10"]), "No upload")
    waiting = (await announce(api, alice, 10))["id"]
    refused(await send(api, alice, cid, [waiting]), "not uploaded yet")
    short = (await announce(api, alice, 10))["id"]
    s3.client.put_object(Bucket=s3.bucket, Key=short, Body=b"12345", ContentType="image/png")
    refused(await send(api, alice, cid, [short]), "holds 5 bytes, not the 10 announced")
    retyped = (await announce(api, alice, 5))["id"]
    s3.client.put_object(Bucket=s3.bucket, Key=retyped, Body=b"12345", ContentType="text/html")
    refused(await send(api, alice, cid, [retyped]), "text/html")
    refused(await send(api, alice, cid, [mine, mine]), "once")
    eleven = [mine] + [(await announce(api, alice, 1))["id"] for _ in range(10)]
    assert [e["field"] for e in assert_problem(await send(api, alice, cid, eleven), 422)["errors"]] == [
        "body.attachments"
    ]
    for bad in ("not-a-uuid", 3):
        problem = assert_problem(await send(api, alice, cid, [bad]), 422)
        assert problem["errors"][0]["field"].startswith("body.attachments")
    # Not in the conversation: 404 as for any send there, and the upload stays free.
    evesfile = await upload(api, eve, TEXT, content_type="text/plain")
    assert_problem(await send(api, eve, cid, [evesfile]), 404)
    unauthenticated = await api.post(
        f"/conversations/{cid}/messages", json={"body": "x", "attachments": [mine]}
    )
    assert_problem(unauthenticated, 401)
    assert (
        await send(api, eve, (await api.conversation(eve, bob, kind="direct"))["id"], [evesfile])
    ).status_code == 202
    # None of the refusals above took anything: alice's file goes out once, then is taken.
    assert (await send(api, alice, cid, [mine])).status_code == 202
    refused(await send(api, alice, cid, [mine]), "attached to another message")
    # The same send repeated (its client_id) takes it again; with other files it is another message.
    again = await upload(api, alice, TEXT, content_type="text/plain")
    first = await send(api, alice, cid, [again], client_id="c-1")
    assert (await send(api, alice, cid, [again], client_id="c-1")).json["id"] == first.json["id"]
    other = await upload(api, alice, TEXT, content_type="text/plain")
    assert_problem(await send(api, alice, cid, [again, other], client_id="c-1"), 409)
    assert (await send(api, alice, cid, [other])).status_code == 202  # the 409 gave it back
    assert await run_worker() == 4


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("filename", ""),
        ("filename", "a/b.png"),
        ("filename", "..\\b.png"),
        ("filename", ".."),
        ("filename", "x" * 256),
        ("filename", "bell\x07.png"),
        ("filename", 7),
        ("content_type", "image"),
        ("content_type", "image/png; charset=x"),
        ("content_type", "image /png"),
        ("content_type", ""),
        ("size", 0),
        ("size", -1),
        ("size", "12"),
        ("size", 1.5),
        ("size", True),
        ("size", 25 * 1024 * 1024 + 1),
    ],
)
async def test_uploads_refuse_bad_names_types_and_sizes(api: ApiClient, field: str, value: Any) -> None:
    alice = await api.user()
    body = {"filename": "ok.png", "content_type": "image/png", "size": 10, field: value}
    problem = assert_problem(await api.post("/uploads", alice, json=body), 422)
    assert [e["field"] for e in problem["errors"]] == [f"body.{field}"], problem
    if value == 25 * 1024 * 1024 + 1:
        assert "26214400 bytes (25 MiB)" in problem["errors"][0]["message"]
    assert_problem(await api.post("/uploads", json={"filename": "a", "content_type": "a/b", "size": 1}), 401)


async def test_a_retried_job_finds_its_uploads_linked_and_goes_on(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    file = await upload(api, alice, TEXT, content_type="text/plain")
    sent = await send(api, alice, cid, [file])
    assert await run_worker() == 1
    # The same job again, as arq runs it after a worker died between the commit and the ack.
    payload = PersistMessage(
        message_id=uuid.UUID(sent.json["id"]),
        conversation_id=uuid.UUID(cid),
        sender_id=uuid.UUID(alice.id),
        seq=sent.json["seq"],
        body="see",
        client_id=None,
        created_at=datetime.now(UTC),
        attachments=(uuid.UUID(file),),
    )
    assert await deps.queue.enqueue(PERSIST_MESSAGE, payload, "persist:again")
    assert await run_worker() == 1
    assert await deadletters.page(deps.redis, limit=10) == ([], None)
    [item] = (await api.get(f"/conversations/{cid}/messages", bob)).json["items"]
    assert [a["id"] for a in item["attachments"]] == [file]
    # And once more after the message was deleted and its file swept: still nothing to fail over.
    assert (await api.delete(f"/messages/{sent.json['id']}", alice)).status_code == 202
    await run_worker()
    for round_ in ("discarded", "swept"):
        if round_ == "swept":
            assert await _sweep(deps) == 1
        assert await deps.queue.enqueue(PERSIST_MESSAGE, payload, f"persist:{round_}")
        assert await run_worker() == 1
        assert await deadletters.page(deps.redis, limit=10) == ([], None)


async def test_an_object_gone_before_the_worker_is_retried_then_dead_lettered_with_nothing_stored(
    api: ApiClient, deps: Deps, s3: S3Server, settings: Settings
) -> None:
    alice, bob, cid = await api.pair()
    admin = await api.user()
    assert await set_admin(settings, admin.username, True)
    file = await upload(api, alice, TEXT, content_type="text/plain")
    sent = await send(api, alice, cid, [file])
    assert sent.status_code == 202, sent.text
    s3.client.delete_object(Bucket=s3.bucket, Key=file)
    worker = create_worker(
        settings.model_copy(update={"job_max_tries": 3}), burst=True, handle_signals=False, poll_delay=0.01
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    dead = (await api.get("/admin/dead-letters", admin)).json["items"]
    assert [(d["job_id"], d["tries"]) for d in dead] == [(sent.json["job_id"], 3)], dead
    assert "not uploaded yet" in dead[0]["error"]
    assert_problem(await api.get(f"/messages/{sent.json['id']}", alice), 404)
    assert (await api.get(f"/conversations/{cid}/messages", alice)).json["items"] == []
    assert not [e for e in await stream(deps.redis, bob.id) if isinstance(e, MessageCreated)]


async def _sweep(deps: Deps) -> int:
    """One sweep, as if every upload URL had expired (moto does not check their expiry; the sweep
    waiting for it is tested on local disk, tests/api/test_upload_lifecycle.py)."""
    now = datetime.now(UTC)
    unsent_before = now - timedelta(seconds=deps.settings.upload_unsent_ttl_seconds)
    return await attachments.sweep(
        deps.sessions, deps.storage, now=now, unsent_before=unsent_before, urls_expired_before=now
    )


async def _age(deps: Deps, upload_id: str, by: timedelta) -> None:
    async with deps.sessions() as session:
        row = await session.get(Upload, uuid.UUID(upload_id))
        assert row is not None
        row.created_at -= by
        await session.commit()


async def test_deleting_a_message_deletes_its_files_from_the_store(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, bob, cid = await api.pair()
    picture, kept = await upload(api, alice, PNG), await upload(api, alice, TEXT, content_type="text/plain")
    doomed = await send(api, alice, cid, [picture])
    other = await send(api, alice, cid, [kept])
    await run_worker()
    [url] = [a["url"] for a in (await api.get(f"/messages/{doomed.json['id']}", bob)).json["attachments"]]
    assert (await download(url)).status_code == 200

    assert (await api.delete(f"/messages/{doomed.json['id']}", alice)).status_code == 202
    await run_worker()
    assert await _sweep(deps) == 1
    # The bytes are gone from the store, even under a download URL handed out before the delete.
    # (S3 answers a missing key with 403 to whoever may not list the bucket, as presigned GETs may not.)
    assert (await download(url)).status_code in (403, 404)
    assert await deps.storage.head(uuid.UUID(picture)) is None
    async with deps.sessions() as session:
        assert await session.get(Upload, uuid.UUID(picture)) is None
    # The other message keeps its file; a second sweep finds nothing more to do.
    assert await _sweep(deps) == 0
    [still] = (await api.get(f"/messages/{other.json['id']}", bob)).json["attachments"]
    assert (await download(still["url"])).content == TEXT


async def test_an_upload_not_sent_in_time_expires_and_its_file_goes(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, _bob, cid = await api.pair()
    old, fresh = await upload(api, alice, PNG), await upload(api, alice, PNG)
    ttl = deps.settings.upload_unsent_ttl_seconds
    async with deps.sessions() as session:
        await session.execute(
            update(Upload)
            .where(Upload.id == uuid.UUID(old))
            .values(created_at=datetime.now(UTC) - timedelta(seconds=ttl + 1))
        )
        await session.commit()
    # Refused before the sweep has run, so what a send may name does not depend on its timing.
    [error] = assert_problem(await send(api, alice, cid, [old]), 422)["errors"]
    assert error["field"] == "body.attachments" and "expired" in error["message"]

    assert await _sweep(deps) == 1
    assert await deps.storage.head(uuid.UUID(old)) is None
    assert_problem(await send(api, alice, cid, [old]), 422)
    # A fresh upload is untouched and still sendable.
    assert await deps.storage.head(uuid.UUID(fresh)) is not None
    assert (await send(api, alice, cid, [fresh])).status_code == 202
    await run_worker()


async def test_a_send_and_the_sweep_racing_for_an_expiring_upload_never_both_win(
    api: ApiClient, deps: Deps
) -> None:
    # The sweep marks an upload no worker linked in one statement that tests the row as a link
    # does: once it is marked, no claim takes it, and an upload a worker linked is never marked.
    alice, _bob, _cid = await api.pair()
    taken, swept = await upload(api, alice, PNG), await upload(api, alice, PNG)
    message_id = uuid.uuid4()
    async with deps.sessions() as session:
        now = datetime.now(UTC)
        assert await attachments.claim(
            session, [uuid.UUID(taken)], uuid.UUID(alice.id), message_id, linked_at=now
        )
        await session.commit()
    later = datetime.now(UTC) + timedelta(days=30)  # as if both had waited far too long
    gone = await attachments.sweep(
        deps.sessions, deps.storage, now=later, unsent_before=later, urls_expired_before=later
    )
    assert gone == 1
    assert await deps.storage.head(uuid.UUID(taken)) is not None
    async with deps.sessions() as session:
        assert not await attachments.claim(session, [uuid.UUID(swept)], uuid.UUID(alice.id), uuid.uuid4())


async def test_only_one_worker_sweeps_in_an_interval_and_a_store_that_is_away_loses_no_row(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    alice, _bob, cid = await api.pair()
    picture = await upload(api, alice, PNG)
    sent = await send(api, alice, cid, [picture])
    await run_worker()
    await api.delete(f"/messages/{sent.json['id']}", alice)
    await run_worker()
    away = S3Storage(deps.settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"}))
    with pytest.raises(StorageUnavailable):
        now = datetime.now(UTC)
        await attachments.sweep(deps.sessions, away, now=now, unsent_before=now, urls_expired_before=now)
    async with deps.sessions() as session:
        assert await session.get(Upload, uuid.UUID(picture)) is not None  # left for the next sweep
    assert await deps.storage.head(uuid.UUID(picture)) is not None

    await _age(deps, picture, timedelta(hours=1))  # its upload URL has expired
    settings = deps.settings  # the default interval: five minutes
    assert await sweeper.sweep_once(deps.redis, deps.sessions, deps.storage, settings) == 1
    assert await sweeper.sweep_once(deps.redis, deps.sessions, deps.storage, settings) is None
    assert await deps.storage.head(uuid.UUID(picture)) is None


async def test_a_refused_repeat_of_a_client_id_leaves_the_stored_message_its_files(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeat shares the message id its client_id makes. One that found the upload free, then
    lost (409) after the first send was stored, gave the stored message's upload back: the
    message lost its file, and the sweep would have deleted it."""
    alice, bob, cid = await api.pair()
    picture = await upload(api, alice, PNG)
    checked, go_on = asyncio.Event(), asyncio.Event()
    head = attachments.objects_problem

    async def held(storage: Any, uploads: Any) -> str | None:
        if not checked.is_set():  # the repeat: it has seen the upload free; wait here
            checked.set()
            await go_on.wait()
        return await head(storage, uploads)

    monkeypatch.setattr(attachments, "objects_problem", held)
    repeat = asyncio.create_task(send(api, alice, cid, [picture], client_id="c-1", body="another body"))
    await checked.wait()
    first = await send(api, alice, cid, [picture], client_id="c-1")
    assert first.status_code == 202, first.text
    await run_worker()
    go_on.set()
    assert (await repeat).status_code == 409

    async with deps.sessions() as session:
        stored = await session.get(Upload, uuid.UUID(picture))
        assert stored is not None and stored.message_id == uuid.UUID(first.json["id"])
    [attachment] = (await api.get(f"/messages/{first.json['id']}", bob)).json["attachments"]
    assert attachment["id"] == picture
    again = await send(api, alice, cid, [picture], client_id="c-1")  # the same send: the same message
    assert (again.status_code, again.json["id"]) == (202, first.json["id"])


async def test_a_repeat_of_a_deleted_message_with_files_is_still_the_same_message(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    # As for every send with a client_id (docs/api.md): the same 202, or 409 for another message,
    # also after the first was deleted, and its files with it.
    alice, _bob, cid = await api.pair()
    picture = await upload(api, alice, PNG)
    first = await send(api, alice, cid, [picture], client_id="c-2")
    await run_worker()
    assert (await api.delete(f"/messages/{first.json['id']}", alice)).status_code == 202
    await run_worker()
    for swept in (False, True):
        if swept:
            assert await _sweep(deps) == 1
        again = await send(api, alice, cid, [picture], client_id="c-2")
        assert (again.status_code, again.json["id"]) == (202, first.json["id"]), again.text
        assert_problem(await send(api, alice, cid, [picture], client_id="c-2", body="another"), 409)
    assert await run_worker() == 0  # nothing new was queued


async def test_a_refused_repeat_that_names_other_files_leaves_them_free(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeat of a client_id naming another upload, refused (409) after the first send was
    stored: its upload is free again, and the stored message shows only its own."""
    alice, bob, cid = await api.pair()
    mine, other = await upload(api, alice, PNG), await upload(api, alice, TEXT, content_type="text/plain")
    checked, go_on = asyncio.Event(), asyncio.Event()
    head = attachments.objects_problem

    async def held(storage: Any, uploads: Any) -> str | None:
        if not checked.is_set():  # the repeat: past the "stored already?" test; wait here
            checked.set()
            await go_on.wait()
        return await head(storage, uploads)

    monkeypatch.setattr(attachments, "objects_problem", held)
    repeat = asyncio.create_task(send(api, alice, cid, [other], client_id="c-3"))
    await checked.wait()
    first = await send(api, alice, cid, [mine], client_id="c-3")
    await run_worker()
    go_on.set()
    assert (await repeat).status_code == 409
    [shown] = (await api.get(f"/messages/{first.json['id']}", bob)).json["attachments"]
    assert shown["id"] == mine
    async with deps.sessions() as session:
        freed = await session.get(Upload, uuid.UUID(other))
        assert freed is not None and freed.message_id is None
    assert (await send(api, alice, cid, [other])).status_code == 202
