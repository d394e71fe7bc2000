"""What a receiver answers cannot hurt the worker: a huge answer is read no further than a small
cap, and one that never ends does not hold the delivery past its timeout."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from workers import webhooks
from workers.webhooks import Delivery, attempt

HUGE = 200 * 1024 * 1024
CHUNK = b"x" * (64 * 1024)
TIMEOUT = 0.5
CAP = getattr(webhooks, "MAX_ANSWER_BYTES", 64 * 1024)


@dataclass
class Sent:
    bytes: int = 0
    done: asyncio.Event | None = None


Answer = Callable[[asyncio.StreamWriter, Sent], Awaitable[None]]


async def _huge(writer: asyncio.StreamWriter, sent: Sent) -> None:
    """200 MiB, generated a chunk at a time (never held), as fast as the client takes it."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % HUGE)
    while sent.bytes < HUGE:
        writer.write(CHUNK)
        await writer.drain()
        sent.bytes += len(CHUNK)


async def _forever(writer: asyncio.StreamWriter, sent: Sent) -> None:
    """A chunked answer that never ends, a few bytes at a time: each read is well within the
    client's read timeout, so only a deadline on the whole attempt ends it."""
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        writer.write(b"1\r\nx\r\n")
        await writer.drain()
        sent.bytes += 1
        await asyncio.sleep(TIMEOUT / 10)


@asynccontextmanager
async def receiver(answer: Answer) -> AsyncIterator[tuple[str, Sent]]:
    """A raw HTTP/1.1 server on a free port: reads one request, answers with `answer`."""
    sent = Sent(done=asyncio.Event())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await answer(writer, sent)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: what the tests want of it
        finally:
            assert sent.done is not None
            sent.done.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook", sent
    finally:
        server.close()
        await server.wait_closed()


def _delivery() -> Delivery:
    return Delivery(webhook_id=uuid.uuid4(), delivery_id=uuid.uuid4(), event={"id": "e", "type": "t"})


def _client() -> httpx.AsyncClient:
    # As workers/main.py builds the worker's client.
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)


async def test_a_huge_answer_is_a_success_read_no_further_than_the_cap() -> None:
    assert CAP <= 64 * 1024
    async with receiver(_huge) as (url, sent), _client() as client:
        tracemalloc.start()
        try:
            failure = await attempt(client, url, _delivery(), "secret")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert sent.done is not None
        async with asyncio.timeout(5):
            await sent.done.wait()  # the worker closed the connection: the receiver stopped
    assert failure is None
    assert peak < 8 * 1024 * 1024, peak
    # What the socket buffers took before the worker hung up, nowhere near the whole answer.
    assert sent.bytes < 32 * 1024 * 1024, sent.bytes


async def test_an_answer_that_never_ends_does_not_outlast_the_timeout() -> None:
    async with receiver(_forever) as (url, sent), _client() as client:
        began = time.monotonic()
        async with asyncio.timeout(TIMEOUT * 6):
            failure = await attempt(client, url, _delivery(), "secret")
        took = time.monotonic() - began
    # The receiver said 200 before it started its endless body: that answer is the delivery's.
    assert failure is None
    assert took < TIMEOUT * 3, took
    assert sent.bytes < CAP
