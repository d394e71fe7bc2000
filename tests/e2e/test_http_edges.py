"""The HTTP edges of the real processes, as a black-box probe meets them.

- A connection that never finishes its request headers is closed after HTTP_HEADER_TIMEOUT_SECONDS
  (web and push), also while it trickles header lines and on a kept-alive connection's next
  request; an open WebSocket is not.
- Every push HTTP response carries the api's security headers and no Server banner, those of
  rejected upgrades and uvicorn's own answers included.
- An invalid UTF-8 text frame is closed with 1007, with nothing in the log.
- The worker's metrics port serves /metrics (the worker's metrics only) and /healthz, 404 else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.stack import Client, Process, Stack

HEADER_TIMEOUT = 1.0
# Time for the deadline's timer to fire and the close to reach this client on a busy machine.
MARGIN = 1.5
# Longer than any deadline the test expects: a connection still open then was never closed.
PATIENCE = HEADER_TIMEOUT + MARGIN + 3

# What api/observe.py's SecurityHeaders puts on every api response.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
UPGRADE = (
    "Host: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.fixture(scope="module")
def edges(stack: Stack) -> Stack:
    for kind in ("web", "push", "worker"):
        stack.start(kind, HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT))
    return stack


def process(stack: Stack, kind: str) -> Process:
    return next(p for p in stack.processes if p.name == kind)


async def new_user(stack: Stack) -> dict[str, Any]:
    """A registered user with an access token, from the stack's web process."""
    client = Client(process(stack, "web").url)
    try:
        return await client.user()
    finally:
        await client.aclose()


def closed_after(port: int, sent: bytes, trickle: bytes = b"") -> float:
    """Seconds until the server closes a connection that sent `sent` and then only `trickle`
    (again every 0.2 s, as a slowloris client does); PATIENCE if it is still open by then."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        sock.settimeout(0.2 if trickle else PATIENCE)
        while time.monotonic() - started < PATIENCE:
            try:
                if not sock.recv(4096):
                    return time.monotonic() - started
            except TimeoutError:
                try:
                    sock.sendall(trickle)
                except OSError:  # reset or broken pipe: closed
                    return time.monotonic() - started
            except OSError:
                return time.monotonic() - started
        return PATIENCE


def raw_response(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers (lower-case names, repeats joined) of the answer to `request`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(head[0].split()[1]), headers


@pytest.mark.parametrize("kind", ["web", "push"])
def test_unfinished_request_headers_are_closed_after_the_deadline(edges: Stack, kind: str) -> None:
    port = process(edges, kind).port
    partial = b"GET /healthz HTTP/1.1\r\nHost: test\r\n"
    assert closed_after(port, partial) < HEADER_TIMEOUT + MARGIN
    assert closed_after(port, b"GET /heal") < HEADER_TIMEOUT + MARGIN
    assert closed_after(port, b"") < HEADER_TIMEOUT + MARGIN  # connects, sends nothing
    # Bytes that keep coming do not move the deadline.
    assert closed_after(port, partial, trickle=b"X-Slow: 1\r\n") < HEADER_TIMEOUT + MARGIN


@pytest.mark.parametrize("kind", ["web", "push"])
def test_a_kept_alive_connections_next_request_has_the_deadline_too(edges: Stack, kind: str) -> None:
    port = process(edges, kind).port
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(4096) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + MARGIN


async def test_a_websocket_outlives_the_header_deadline(edges: Stack) -> None:
    user = await new_user(edges)
    push = process(edges, "push")
    async with connect(f"{push.ws_url}?token={user['access_token']}", compression=None) as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "ready"
        # Nothing to wait for but time: the deadline must pass with the socket open.
        await asyncio.sleep(HEADER_TIMEOUT + MARGIN)
        await ws.send('{"type": "ping"}')
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"


def test_every_push_response_carries_the_apis_security_headers(edges: Stack) -> None:
    web, push = process(edges, "web"), process(edges, "push")
    api = httpx.get(f"{web.url}/healthz", timeout=5)
    assert {name: api.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS

    answers: dict[str, tuple[int, dict[str, str]]] = {}
    for path in ("/healthz", "/readyz", "/metrics", "/nowhere", "/ws"):
        got = httpx.get(push.url + path, timeout=5)
        answers[f"GET {path}"] = got.status_code, dict(got.headers)
    answers["upgrade elsewhere"] = raw_response(
        push.port, f"GET /nowhere HTTP/1.1\r\n{UPGRADE}Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    answers["upgrade, old version"] = raw_response(
        push.port, f"GET /ws HTTP/1.1\r\n{UPGRADE}Sec-WebSocket-Version: 8\r\n\r\n".encode()
    )
    answers["upgrade, no key"] = raw_response(
        push.port,
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    answers["not http"] = raw_response(push.port, b"\x16\x03\x01 nonsense\r\n\r\n")

    statuses = {what: status for what, (status, _) in answers.items()}
    assert statuses == {
        "GET /healthz": 200,
        "GET /readyz": 200,
        "GET /metrics": 200,
        "GET /nowhere": 404,
        "GET /ws": 405,
        "upgrade elsewhere": 403,  # the app refuses: websockets answers
        "upgrade, old version": 400,
        "upgrade, no key": 400,
        "not http": 400,  # uvicorn's own answer
    }
    for what, (_, headers) in answers.items():
        assert {name: headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, (what, headers)
        assert "server" not in headers, (what, headers)


async def test_an_invalid_utf8_text_frame_is_closed_with_1007_quietly(edges: Stack) -> None:
    user = await new_user(edges)
    push = process(edges, "push")
    logged_before = push.output()
    async with connect(f"{push.ws_url}?token={user['access_token']}", compression=None) as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "ready"
        await ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame: Any = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                assert frame["type"] in {"presence", "pong"}, frame
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007, closed.value
    logged = push.output()[len(logged_before) :]
    assert "Traceback" not in logged and "ERROR" not in logged, logged
    # The process serves on.
    assert httpx.get(f"{push.url}/healthz", timeout=5).status_code == 200


def test_the_worker_metrics_port_serves_metrics_and_health_only(edges: Stack) -> None:
    worker = process(edges, "worker")
    scraped = httpx.get(f"{worker.url}/metrics", timeout=5)
    assert scraped.status_code == 200
    families = {f.name for f in text_string_to_metric_families(scraped.text)}
    assert {"arq_jobs", "arq_queue_jobs", "arq_workers", "chat_webhook_deliveries"} <= families, families
    # Metrics only the api or the push process ever moves stay out of the worker's.
    for foreign in (
        "chat_http_requests",
        "chat_http_request_seconds",
        "chat_messages_accepted",
        "chat_ws_connections",
        "chat_ws_frames_sent",
        "chat_ws_closed",
    ):
        assert foreign not in families, sorted(families)
    health = httpx.get(f"{worker.url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    for path in ("/", "/anything", "/metrics/x", "/healthz/x", f"/{uuid.uuid4().hex}"):
        missing = httpx.get(worker.url + path, timeout=5)
        assert missing.status_code == 404, (path, missing.text[:200])
        assert "arq_jobs" not in missing.text
    assert httpx.post(f"{worker.url}/metrics", timeout=5).status_code in {404, 405}
