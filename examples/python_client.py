"""A headless-chat client to copy from: REST with httpx, live events with websockets.

    python examples/python_client.py --api http://127.0.0.1:8000 --push ws://127.0.0.1:8001

Against `make dev` (or `python -m devserver`) it runs the whole flow a chat app needs and prints
each step: two users sign in (registering first if they are new; or, with `--app-backend URL`,
logging in to your app's backend, which hands them chat tokens: examples/app_backend.py), A opens
a direct conversation with B, B's WebSocket connects, A sends messages, B receives them. In the
middle B's network goes away for a moment; A keeps sending, and B's reconnect resumes from its
last `event_id`, so the messages sent meanwhile arrive through the server's replay. It exits 0
once B holds every message exactly once and in `seq` order, and 1 otherwise.

What to copy is `ChatClient`, in `chat_client.py` beside this file: sends that are safe to retry
(`client_id`), retries that honour `Retry-After`, de-duplication by `event_id`, and a reconnect
loop that acts on each close code (docs/api.md, WebSocket). Needs `pip install httpx websockets`;
nothing else beyond the stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from typing import TYPE_CHECKING

import httpx

# Run as a script (as the README does) the module beside this file is importable as it is; within
# the repository's packages (mypy, an import from the tests) it is examples.chat_client.
if TYPE_CHECKING or __package__:
    from examples.chat_client import ApiError, ChatClient, Json
else:
    from chat_client import ApiError, ChatClient, Json


async def wait_until_stored(client: ChatClient, conversation_id: str, seqs: list[int]) -> None:
    """Poll history until the worker has stored these messages (a 202 only means queued)."""
    while True:
        stored = {m["seq"] for m in await client.history(conversation_id, after=min(seqs) - 1)}
        if set(seqs) <= stored:
            return
        await asyncio.sleep(0.05)


async def demo(args: argparse.Namespace) -> bool:
    alice = ChatClient(args.api, args.push, args.user_a, args.password, args.app_backend)
    bob = ChatClient(args.api, args.push, args.user_b, args.password, args.app_backend)
    sent: list[Json] = []  # alice's 202 answers, plus the body and client_id she sent
    offline: list[int] = []  # seqs sent while bob was offline
    listening: asyncio.Task[None] | None = None
    try:
        await alice.sign_in()
        await bob.sign_in()
        conversation = await alice.open_direct(bob.user_id)
        listening = asyncio.create_task(bob.listen())
        await bob.connected.wait()

        async def send(body: str) -> None:
            client_id = uuid.uuid4().hex  # one per message, chosen before the first try
            accepted = await alice.send(conversation, body, client_id)
            alice.say(f"sent #{accepted['seq']} {body!r}: {accepted['status']}")
            sent.append(accepted | {"body": body, "client_id": client_id})

        for n in range(1, 4):
            await send(f"live message {n}")
        # Sending again with the same client_id, as a client does when an answer is lost, gets the
        # same message back: same seq, and bob still receives it once.
        first = sent[0]
        again = await alice.send(conversation, first["body"], first["client_id"])
        alice.say(f"re-sent #{first['seq']} with the same client_id: got #{again['seq']}, no duplicate")
        await bob.wait_for(conversation, [m["seq"] for m in sent])

        bob.say(f"--- network outage: the socket drops, reconnects fail; {alice.username} keeps sending ---")
        async with bob.network_outage():
            for n in range(1, 4):
                await send(f"sent during the outage {n}")
            offline = [m["seq"] for m in sent[-3:]]
            # Stored means in bob's event stream too, so his reconnect will replay them.
            await wait_until_stored(alice, conversation, offline)
        bob.say("--- network back ---")

        await bob.connected.wait()
        for n in range(4, 6):
            await send(f"live message {n}")
        await bob.wait_for(conversation, [m["seq"] for m in sent])
        return check(bob, conversation, sent, offline)
    finally:
        if listening is not None:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
        await alice.stop()
        await bob.stop()


def check(bob: ChatClient, conversation: str, sent: list[Json], offline: list[int]) -> bool:
    """What the demo proves: every message once, in seq order, the offline ones by resuming."""
    received = bob.messages[conversation]
    seqs = [m["seq"] for m in sent]
    problems = []
    if seqs != sorted(set(seqs)):
        problems.append(f"seqs are not increasing: {seqs}")
    # The re-send above must not have made a message of its own between ours.
    problems += [
        f"#{seq} {received[seq]['body']!r} is not one of ours"
        for seq in received
        if seqs[0] <= seq <= seqs[-1] and seq not in seqs
    ]
    problems += [
        f"#{m['seq']} arrived as {received[m['seq']]['body']!r}, sent as {m['body']!r}"
        for m in sent
        if received[m["seq"]]["body"] != m["body"]
    ]
    problems += [
        f"#{seq} came {via}, not by replay"
        for seq in offline
        if (via := bob.arrived_via[received[seq]["id"]]) != "replay"
    ]
    for problem in problems:
        print(f"FAILED: {problem}", flush=True)
    if problems:
        return False
    # Display order is seq order, whatever order the events arrived in.
    print(f"{bob.username}'s view of the conversation, by seq:", flush=True)
    for seq in seqs:
        print(f"  #{seq} {received[seq]['body']}", flush=True)
    print(
        f"OK: {len(sent)} messages received once each in seq order, "
        f"{len(offline)} of them sent while {bob.username} was offline and replayed on resume",
        flush=True,
    )
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the api process")
    parser.add_argument("--push", default="ws://127.0.0.1:8001", help="the push process")
    parser.add_argument("--user-a", default="alice", help="the sender (registered if new)")
    parser.add_argument("--user-b", default="bob", help="the receiver (registered if new)")
    parser.add_argument("--password", default="demo-password", help="both users' password")
    parser.add_argument(
        "--app-backend",
        default=os.environ.get("APP_BACKEND_URL", ""),
        help="get chat tokens by logging in to this app backend (examples/app_backend.py) "
        "instead of registering with the chat service; default $APP_BACKEND_URL",
    )
    parser.add_argument("--timeout", type=float, default=60, help="give up after this many seconds")
    args = parser.parse_args()

    async def bounded() -> bool:
        async with asyncio.timeout(args.timeout):
            return await demo(args)

    try:
        return 0 if asyncio.run(bounded()) else 1
    except TimeoutError:
        print(f"FAILED: the demo did not finish within {args.timeout:g} s", flush=True)
    except (ApiError, httpx.HTTPError) as exc:
        print(f"FAILED: {exc}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
