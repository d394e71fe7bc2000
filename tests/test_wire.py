"""One owner per wire format and Redis key family, held to it by what really reaches Redis."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from falcon.testing import ASGIConductor

from api.deps import Deps
from chat.cli import set_admin
from chat.domain import membership, quota, sequence
from chat.identity.security import Tokens
from chat.infra import probes, restarts
from chat.jobqueue import accept, deadletters, heartbeats, jobstats, keys
from chat.realtime import eventbus, presence
from chat.realtime.eventbus import RedisPublisher
from chat.realtime.events import encode, frame
from chat.settings import Settings
from push.app import create_app as create_push
from tests.support import ApiClient
from tests.support.messages import message_created
from tests.support.settings import RunWorker


async def test_the_frame_built_in_lua_is_the_frame_built_in_python(deps: Deps) -> None:
    user = uuid.uuid4()
    event = message_created(user, 7, 'quotes " backslashes \\ and ünïcödé', client_id="c-1")
    async with deps.redis.pubsub() as pubsub:
        await pubsub.subscribe(eventbus.channel(user))
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        [event_id] = await RedisPublisher(deps.redis, stream_maxlen=100).publish(event, [user])
        published = None
        while published is None:
            published = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert published["data"] == frame(event_id, encode(event))
    assert orjson.loads(published["data"])["event_id"] == event_id


def families(settings: Settings) -> list[str]:
    """Every key family, as its owning module builds it: a prefix (or the whole name)."""
    q = settings.queue_name
    return [
        eventbus.stream_key("").removesuffix("{}"),
        sequence.counter_key("", ""),
        sequence.checked_key("", ""),
        restarts.node_key(""),
        restarts.epoch_key(""),
        accept.claim_key("", ""),
        accept.send_rate_prefix(""),
        membership.members_key("", ""),
        membership.generation_key("", ""),
        presence.presence_key("").removesuffix("{}"),
        presence.last_seen_key("").removesuffix("{}"),
        presence.typing_key("", "").rstrip(":"),
        deadletters.HASH,
        deadletters.INDEX,
        heartbeats.REGISTRY,
        heartbeats.RECORD_PREFIX,
        jobstats.minute_key(q, 0).removesuffix("0"),
        "chat:limits",  # the limits library's own keys, under the prefix chat.domain.ratelimit gives it
        quota.KEY_PREFIX,
        probes.PROBE_KEY,
        keys.job_key(""),
        keys.in_progress_key(""),
        keys.result_key(""),
        keys.retry_key(""),
        q,
        f"{q}:health-check",
    ]


async def test_every_key_in_redis_belongs_to_a_family_its_module_owns(
    api: ApiClient, deps: Deps, run_worker: RunWorker
) -> None:
    # A run that touches every feature that writes to Redis.
    alice, bob = await api.user(), await api.user()
    await api.post("/auth/login", json={"username": alice.username, "password": "wrong password"})
    cid = (await api.conversation(alice, bob))["id"]
    sent = await api.post(f"/conversations/{cid}/messages", alice, json={"body": "hi", "client_id": "k"})
    assert sent.status_code == 202
    await api.post(f"/conversations/{cid}/typing", alice)
    await api.post(f"/conversations/{cid}/read", bob, json={"seq": 1})
    await api.delete(f"/conversations/{cid}/participants/{bob.id}", bob)
    await run_worker()
    await api.patch(f"/messages/{sent.json['id']}", alice, json={"body": "edited"})
    await api.request("POST", "/conversations/nope/messages", alice, json={"body": "x"})
    assert await set_admin(deps.settings, alice.username, True)
    await api.get("/admin/queue", alice)
    upload = {"filename": "a.txt", "content_type": "text/plain", "size": 3}
    assert (await api.post("/uploads", alice, json=upload)).status_code == 201
    assert (await api.get("/readyz")).status_code == 200
    token = Tokens(deps.settings).issue_access(uuid.UUID(alice.id))
    async with (
        ASGIConductor(create_push(deps.settings)) as push,
        push.simulate_ws("/ws", query_string=f"token={token}") as ws,
    ):
        await asyncio.wait_for(ws.receive_text(), 3)
    owned = families(deps.settings)
    keys = sorted([k.decode() async for k in deps.redis.scan_iter(count=1000)])
    assert keys, "the run wrote nothing"
    strays = [k for k in keys if not any(k == f or k.startswith(f) for f in owned)]
    assert strays == [], f"keys outside every family: {strays}"


def test_a_send_without_attachments_is_the_job_it_was_before_them() -> None:
    """Workers from before attachments refuse unknown fields: a send without files must not have one."""
    import uuid
    from datetime import UTC, datetime

    from chat.jobqueue.jobs import PersistMessage

    fields = {
        "message_id": uuid.uuid4(),
        "conversation_id": uuid.uuid4(),
        "sender_id": uuid.uuid4(),
        "seq": 1,
        "body": "x",
        "client_id": None,
        "created_at": datetime.now(UTC),
    }
    assert "attachments" not in PersistMessage(**fields).dump()
    files = (uuid.uuid4(),)
    with_files = PersistMessage(**fields, attachments=files).dump()
    assert with_files["attachments"] == [str(files[0])]
    assert PersistMessage.model_validate(with_files).attachments == files
