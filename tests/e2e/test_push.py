"""web, worker and two push processes as real subprocesses; real WebSocket clients."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chat.realtime.eventbus import RedisPublisher, stream_key
from chat.realtime.presence import presence_key
from tests.support.messages import message_created
from tests.support.sockets import direct, frames_until, next_frame, open_ws, pair_online, procs
from tests.support.stack import E2E_REDIS_URL, SECRET, Client, Process, Stack


@pytest.fixture(scope="module")
def push_stack(stack: Stack) -> Stack:
    stack.start("web")
    stack.start("worker")
    stack.start("push")
    stack.start("push")
    return stack


@pytest.fixture
def web(push_stack: Stack) -> Process:
    return procs(push_stack, "web")[0]


async def nothing_more(ws: ClientConnection, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), wait)


async def say(client: Client, user: dict[str, Any], cid: str, body: str) -> dict[str, Any]:
    result = await client.http.post(
        f"/conversations/{cid}/messages", json={"body": body}, headers=user["headers"]
    )
    assert result.status_code == 202, result.text
    accepted: dict[str, Any] = result.json()
    return accepted


async def test_delivery_on_either_push_process_and_every_device(client: Client, push_stack: Stack) -> None:
    push_a, push_b = procs(push_stack, "push")
    alice, bob, eve = await client.user(), await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    bob_phone, ready = await open_ws(push_a, bob)
    assert ready["type"] == "ready" and ready["user_id"] == bob["id"] and ready["replayed"] == 0
    bob_laptop, _ = await open_ws(push_b, bob)
    alice_ws, _ = await open_ws(push_b, alice)
    eve_ws, _ = await open_ws(push_a, eve)
    try:
        sent = await say(client, alice, cid, "hello bob")
        for ws in (bob_phone, bob_laptop, alice_ws):
            [event] = await frames_until(ws, 1)
            assert event["data"]["id"] == sent["id"] and event["conversation_id"] == cid
            assert event["data"]["body"] == "hello bob" and event["event_id"]
        await nothing_more(eve_ws)
    finally:
        for ws in (bob_phone, bob_laptop, alice_ws, eve_ws):
            await ws.close()


async def test_a_reply_reaches_every_participant_and_its_thread(client: Client, push_stack: Stack) -> None:
    async with pair_online(client, push_stack) as p:
        root = await say(client, p.alice, p.cid, "lunch?")
        [received] = await frames_until(p.bob_ws, 1)
        # Bob replies to what he received: stored already, so always a valid parent.
        answer = await client.http.post(
            f"/conversations/{p.cid}/messages",
            json={"body": "yes", "reply_to": received["data"]["id"]},
            headers=p.bob["headers"],
        )
        assert answer.status_code == 202, answer.text
        for ws in (p.alice_ws, p.bob_ws):
            events = await frames_until(ws, 2 if ws is p.alice_ws else 1)
            assert events[-1]["data"]["id"] == answer.json()["id"]
            assert events[-1]["data"]["reply_to"] == root["id"] and events[-1]["data"]["reply_count"] == 0
        thread = await client.http.get(
            f"/conversations/{p.cid}/messages", params={"thread": root["id"]}, headers=p.alice["headers"]
        )
        assert [m["body"] for m in thread.json()["items"]] == ["yes"]
        parent = await client.http.get(f"/messages/{root['id']}", headers=p.alice["headers"])
        assert parent.json()["reply_count"] == 1 and parent.json()["last_reply_at"]


async def test_a_reaction_reaches_every_participant_once(client: Client, push_stack: Stack) -> None:
    async with pair_online(client, push_stack) as p:
        sent = await say(client, p.alice, p.cid, "react to me")
        await frames_until(p.bob_ws, 1)
        await frames_until(p.alice_ws, 1)
        path = f"/messages/{sent['id']}/reactions/%F0%9F%91%8D"
        for _ in range(3):  # idempotent: one reaction, one event
            assert (await client.http.put(path, headers=p.bob["headers"])).status_code == 204
        thumbs = {"message_id": sent["id"], "emoji": "\N{THUMBS UP SIGN}", "user_id": p.bob["id"]}
        for ws in (p.alice_ws, p.bob_ws):
            [added] = await frames_until(ws, 1, "reaction.added")
            assert added["conversation_id"] == p.cid and added["event_id"] and added["data"] == thumbs
        assert (await client.http.delete(path, headers=p.bob["headers"])).status_code == 204
        for ws in (p.alice_ws, p.bob_ws):
            [removed] = await frames_until(ws, 1, "reaction.removed")
            assert removed["data"]["user_id"] == p.bob["id"]
            await nothing_more(ws)


async def test_a_mention_arrives_with_its_message_and_is_counted(client: Client, push_stack: Stack) -> None:
    async with pair_online(client, push_stack) as p:
        await say(client, p.alice, p.cid, f"@{p.bob['username']} look")
        [created] = await frames_until(p.bob_ws, 1)
        assert created["data"]["mentions"] == [p.bob["id"]]
        view = await client.http.get(f"/conversations/{p.cid}", headers=p.bob["headers"])
        assert view.json()["unread_mentions"] == 1


async def test_resume_replays_missed_events_then_goes_live(client: Client, push_stack: Stack) -> None:
    push_a, push_b = procs(push_stack, "push")
    alice, bob = await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    ws, _ = await open_ws(push_a, bob)
    await say(client, alice, cid, "seen 1")
    [seen] = await frames_until(ws, 1)
    await ws.close()

    missed = [await say(client, alice, cid, f"missed {i}") for i in range(5)]
    # Bob comes back once the worker has stored and published them all: their jobs are complete.
    for sent in missed:
        for _ in range(200):
            job = await client.http.get(f"/jobs/{sent['job_id']}", headers=alice["headers"])
            if job.json()["status"] == "complete":
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"{sent['job_id']} never completed")
    ws, first = await open_ws(push_b, bob, last_event_id=seen["event_id"])
    try:
        replayed = [first] + [await next_frame(ws) for _ in range(4)]
        assert [f["data"]["id"] for f in replayed] == [m["id"] for m in missed]
        ready = await next_frame(ws)
        assert ready["type"] == "ready" and ready["replayed"] == 5
        assert ready["last_event_id"] == replayed[-1]["event_id"]
        live = await say(client, alice, cid, "live again")
        [event] = await frames_until(ws, 1)
        assert event["data"]["id"] == live["id"]
        ids = [f["event_id"] for f in replayed] + [event["event_id"]]
        assert len(set(ids)) == len(ids)
        await nothing_more(ws)
    finally:
        await ws.close()


async def test_trimmed_id_gets_resync_required(client: Client, push_stack: Stack) -> None:
    push = procs(push_stack, "push")[0]
    alice, bob = await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    ws, _ = await open_ws(push, bob)
    for i in range(4):
        await say(client, alice, cid, f"m{i}")
    events = await frames_until(ws, 4)
    await ws.close()
    r = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
    await r.xtrim(stream_key(bob["id"]), maxlen=1, approximate=False)
    await r.aclose()
    ws, first = await open_ws(push, bob, last_event_id=events[0]["event_id"])
    try:
        assert first == {"type": "resync_required"}
        ready = await next_frame(ws)
        assert ready["type"] == "ready"
    finally:
        await ws.close()


async def close_of(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, None)


async def closed_with(ws: ClientConnection, timeout: float = 10) -> int | None:
    return (await close_of(ws, timeout))[0]


async def test_bad_and_expiring_tokens_close_4401(client: Client, push_stack: Stack) -> None:
    push = procs(push_stack, "push")[0]
    for query in ("", "?token=garbage", "?token="):
        ws = await connect(push.ws_url + query, compression=None)
        assert await closed_with(ws) == 4401
    alice = await client.user()
    expired = jwt.encode(
        {
            "sub": alice["id"],
            "iat": int(time.time()) - 60,
            "exp": int(time.time()) - 1,
            "jti": "x",
            "type": "access",
        },
        SECRET,
        algorithm="HS256",
    )
    ws = await connect(f"{push.ws_url}?token={expired}", compression=None)
    assert await closed_with(ws) == 4401
    soon = jwt.encode(
        {
            "sub": alice["id"],
            "iat": int(time.time()),
            "exp": int(time.time()) + 2,
            "jti": "y",
            "type": "access",
        },
        SECRET,
        algorithm="HS256",
    )
    ws = await connect(f"{push.ws_url}?token={soon}", compression=None)
    assert (await next_frame(ws))["type"] == "ready"
    started = time.monotonic()
    assert await closed_with(ws) == 4401
    assert time.monotonic() - started < 5
    header = await connect(
        push.ws_url, compression=None, additional_headers={"Authorization": f"Bearer {alice['access_token']}"}
    )
    assert (await next_frame(header))["type"] == "ready"
    await header.close()
    # The token travels in the query string; it must never reach a log.
    assert alice["access_token"] not in push.output() and soon not in push.output()


async def test_typing_and_presence(client: Client, push_stack: Stack) -> None:
    push = procs(push_stack, "push")[1]
    alice, bob = await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    profile = (await client.http.get(f"/users/{bob['id']}", headers=alice["headers"])).json()
    assert profile["online"] is False
    bob_ws, _ = await open_ws(push, bob)
    alice_ws, _ = await open_ws(push, alice)
    try:
        profile = (await client.http.get(f"/users/{bob['id']}", headers=alice["headers"])).json()
        assert profile["online"] is True and profile["last_seen_at"]
        typing = await client.http.post(f"/conversations/{cid}/typing", headers=alice["headers"])
        assert typing.status_code == 204
        frame = await next_frame(bob_ws)
        assert frame == {"type": "typing", "conversation_id": cid, "data": {"user_id": alice["id"]}}
        await nothing_more(alice_ws)
        await bob_ws.send('{"type":"ping"}')
        assert await next_frame(bob_ws) == {"type": "pong"}
        await bob_ws.send("not json")
        assert (await next_frame(bob_ws))["type"] == "error"
        await bob_ws.send('{"type":"ping"}')  # the connection survived the bad frame
        assert await next_frame(bob_ws) == {"type": "pong"}
        await bob_ws.send("x" * 5000)
        assert await closed_with(bob_ws) == 1009
    finally:
        await bob_ws.close()
        await alice_ws.close()
    for _ in range(50):
        profile = (await client.http.get(f"/users/{bob['id']}", headers=alice["headers"])).json()
        if not profile["online"]:
            break
        await asyncio.sleep(0.1)
    assert profile["online"] is False and profile["last_seen_at"]


BOUND_MIB = 12


def rss_kib(process: Process) -> int:
    with open(f"/proc/{process.popen.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def settled_rss_kib(process: Process) -> int:
    """RSS once the process has caught up with what was published: two samples 0.2 s apart agree."""
    last = rss_kib(process)
    for _ in range(50):
        await asyncio.sleep(0.2)
        now = rss_kib(process)
        if abs(now - last) < 512:
            return now
        last = now
    return last


async def flood_a_reader_that_never_reads(
    push: Process, client: Client, *, closes: bool
) -> tuple[float, int | None]:
    """10,000 frames of ~3.3 KB (about 33 MB) at a client that never reads: (MiB grown, close code)."""
    alice, bob = await client.user(), await client.user()
    cid = await direct(client, alice, bob)
    ws = await connect(f"{push.ws_url}?token={bob['access_token']}", compression=None, max_queue=1)
    await next_frame(ws)  # ready
    before = rss_kib(push)
    r = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
    publisher = RedisPublisher(r, stream_maxlen=1000)
    now = datetime.now(UTC)
    for i in range(10_000):
        message = message_created(
            uuid.UUID(alice["id"]),
            i + 1,
            f"flood {i} " + "x" * 3000,
            conversation_id=uuid.UUID(cid),
            created_at=now,
        )
        await publisher.publish(message, [uuid.UUID(bob["id"])])
    await r.aclose()
    grown_mib = (await settled_rss_kib(push) - before) / 1024
    if not closes:
        await ws.close()
        return grown_mib, None
    return grown_mib, await closed_with(ws, timeout=20)


async def test_client_that_never_reads_is_closed_4408_with_memory_bounded(
    client: Client, push_stack: Stack
) -> None:
    push = procs(push_stack, "push")[0]
    grown_mib, code = await flood_a_reader_that_never_reads(push, client, closes=True)
    print(f"a client that never reads 33 MB of frames: push grew {grown_mib:.1f} MiB, closed {code}")
    # The bounded send queue (512 frames, ~1.7 MB) keeps the process far below the 33 MB sent.
    assert grown_mib < BOUND_MIB, f"push process grew by {grown_mib:.1f} MiB"
    assert code == 4408
    # The push process is still healthy for everyone else.
    alice = await client.user()
    other, ready = await open_ws(push, alice)
    assert ready["type"] == "ready"
    await other.close()


async def test_the_memory_bound_is_one_a_regression_would_cross(client: Client, push_stack: Stack) -> None:
    # The same flood at a push process whose send queue is effectively unbounded.
    unbounded = push_stack.start("push", PUSH_SEND_QUEUE_SIZE="1000000")
    try:
        grown_mib, _ = await flood_a_reader_that_never_reads(unbounded, client, closes=False)
    finally:
        unbounded.stop()
        push_stack.processes.remove(unbounded)
    print(f"the same flood at an unbounded queue: push grew {grown_mib:.1f} MiB")
    assert grown_mib > BOUND_MIB, (
        f"an unbounded queue grew only {grown_mib:.1f} MiB: the bound proves nothing"
    )


async def test_sigterm_closes_sockets_with_1012(client: Client, push_stack: Stack) -> None:
    push = push_stack.start("push")
    bob = await client.user()
    ws, _ = await open_ws(push, bob)
    started = time.monotonic()
    push.signal(signal.SIGTERM)
    assert await close_of(ws) == (1012, "server restarting; reconnect")
    assert push.popen.wait(10) is not None
    assert time.monotonic() - started < 10


async def test_no_server_banner(client: Client, push_stack: Stack) -> None:
    push = procs(push_stack, "push")[0]
    async with httpx.AsyncClient() as http:
        assert "server" not in (await http.get(push.url + "/healthz")).headers
    bob = await client.user()
    ws, _ = await open_ws(push, bob)
    try:
        assert ws.response is not None and "server" not in ws.response.headers
    finally:
        await ws.close()


async def test_a_flooding_client_is_closed_4429(client: Client, push_stack: Stack) -> None:
    push = procs(push_stack, "push")[1]
    bob = await client.user()
    ws, _ = await open_ws(push, bob)
    for _ in range(40):  # twice RATE_LIMIT_CLIENT_FRAMES' default of 20/second, at once
        await ws.send('{"type":"ping"}')
    code, reason = await close_of(ws)
    assert code == 4429 and reason == "too many frames; retry after 1 s"


async def test_the_socket_cap_counts_both_push_processes(client: Client, push_stack: Stack) -> None:
    push_a, push_b = procs(push_stack, "push")
    bob = await client.user()
    # RATE_LIMIT_SOCKETS_PER_USER defaults to 20: ten on each process fill it.
    sockets = [(await open_ws(push, bob))[0] for push in [push_a, push_b] * 10]
    try:
        for push in (push_a, push_b):
            over = await connect(f"{push.ws_url}?token={bob['access_token']}", compression=None)
            assert await close_of(over) == (4429, "too many sockets; retry after 5 s")
        await sockets.pop().close()
        # Its slot frees as its session ends, a moment after the closing handshake.
        r = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
        async with asyncio.timeout(5):
            while await r.zcard(presence_key(bob["id"])) >= 20:
                await asyncio.sleep(0.02)
        await r.aclose()
        again, ready = await open_ws(push_a, bob)
        assert ready["type"] == "ready"
        sockets.append(again)
    finally:
        for ws in sockets:
            await ws.close()
