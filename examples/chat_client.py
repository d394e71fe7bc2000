"""`ChatClient`, the part of the example to copy: one signed-in user of headless-chat, with REST
over httpx and live events over websockets.

Sends that are safe to retry (`client_id`), retries that honour `Retry-After`, de-duplication by
`event_id`, and a reconnect loop that acts on each close code (docs/api.md, WebSocket).
`python_client.py` beside it runs the demo. Needs `pip install httpx websockets`; nothing else
beyond the stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

Json = dict[str, Any]

# Reconnect back-off: 0.5 s doubling to 30 s, with jitter so that many clients dropped by the same
# outage do not all come back in the same instant.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
SEND_ATTEMPTS = 8


def backoff(attempt: int) -> float:
    """Exponential back-off with "equal jitter": half fixed, half random."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return delay / 2 + random.uniform(0, delay / 2)


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a 429 or 503 asks us to wait (the api always sends whole seconds)."""
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class ApiError(Exception):
    """A problem-details answer (RFC 9457) that retrying would not fix."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        self.status = response.status_code
        super().__init__(f"{self.status} {problem.get('title', '')}: {problem.get('detail', response.text)}")


class ChatClient:
    """One signed-in user: REST calls, and (for a receiving user) a self-healing WebSocket."""

    def __init__(self, api: str, push: str, username: str, password: str, app_backend: str = "") -> None:
        # Accept the URLs with or without their path, as dev mode prints them with it.
        self.api = api.rstrip("/").removesuffix("/api/v1") + "/api/v1"
        self.push = push.rstrip("/").removesuffix("/ws") + "/ws"
        self.username = username
        self.password = password
        # With an app backend (examples/app_backend.py), the password is the app's and the token
        # comes from there; the chat service never sees the password (docs/integrate.md).
        self.app_backend = app_backend.rstrip("/")
        self.user_id = ""
        self._http = httpx.AsyncClient(base_url=self.api, timeout=10)
        self._access_token = ""
        self._refresh_token = ""
        # Refresh tokens rotate, and presenting a retired one revokes the whole login: two tasks
        # refreshing at once (a REST call and the socket both seeing 401/4401) would log us out.
        self._refresh_lock = asyncio.Lock()

        # What the WebSocket side has received.
        self.messages: dict[str, dict[int, Json]] = {}  # conversation id -> seq -> message
        self.arrived_via: dict[str, str] = {}  # message id -> "live", "replay" or "rest"
        self.last_event_id: str | None = None  # where a reconnect resumes from
        self._seen_event_ids: set[str] = set()  # delivery is at-least-once (a real app would cap this)
        self._new_message = asyncio.Event()
        self.connected = asyncio.Event()  # set while a socket is past its `ready` frame
        self._reached_ready = False  # whether the latest connection got that far
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._network_up = asyncio.Event()  # demo only: cleared by network_outage()
        self._network_up.set()

    def say(self, text: str) -> None:
        print(f"[{self.username}] {text}", flush=True)

    # --- REST -------------------------------------------------------------------------------

    async def sign_in(self) -> None:
        """Register (a 409 just means the user exists already), log in, learn our own id."""
        if self.app_backend:
            await self._sign_in_through_app()
            return
        registered = await self._http.post(
            "/auth/register", json={"username": self.username, "password": self.password}
        )
        if registered.status_code == 201:
            self.say("registered")
        elif registered.status_code != 409:
            raise ApiError(registered)
        login = await self._http.post(
            "/auth/login", json={"username": self.username, "password": self.password}
        )
        if login.status_code != 200:
            raise ApiError(login)
        self._keep_tokens(login.json())
        self.user_id = (await self._call("GET", "/users/me"))["id"]
        self.say(f"logged in as user {self.user_id}")

    async def _sign_in_through_app(self) -> None:
        """Log in to the app's backend, which hands us a chat token (no refresh token: when it
        expires we ask the app again)."""
        login = await self._http.post(
            f"{self.app_backend}/login", json={"username": self.username, "password": self.password}
        )
        if login.status_code != 200:
            raise ApiError(login)
        self._keep_tokens(login.json())
        self.user_id = (await self._call("GET", "/users/me"))["id"]
        self.say(f"signed in through the app backend: chat user {self.user_id}")

    def _keep_tokens(self, pair: Json) -> None:
        self._access_token = pair["access_token"]
        self._refresh_token = pair.get("refresh_token", "")

    async def refresh_tokens(self, stale: str) -> None:
        """Trade the refresh token for a new pair, unless another task already did."""
        async with self._refresh_lock:
            if self._access_token != stale:
                return
            if self.app_backend:
                await self._sign_in_through_app()
                return
            answer = await self._http.post("/auth/refresh", json={"refresh_token": self._refresh_token})
            if answer.status_code == 200:
                self._keep_tokens(answer.json())
                self.say("access token refreshed")
            else:
                # The login was revoked or has expired: start a new one.
                self.say(f"refresh refused ({answer.status_code}); logging in again")
                await self.sign_in()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One api call with our bearer token; on a 401, refresh once and try again."""
        token = self._access_token
        response = await self._http.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )
        if response.status_code == 401:
            await self.refresh_tokens(token)
            response = await self._http.request(
                method, path, headers={"Authorization": f"Bearer {self._access_token}"}, **kwargs
            )
        return response

    async def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        response = await self._request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response)
        body: Json = response.json()
        return body

    async def open_direct(self, other_user_id: str) -> str:
        """The direct conversation with another user: 201 the first time, 200 (the same one) after."""
        conversation = await self._call(
            "POST", "/conversations", json={"kind": "direct", "participant_ids": [other_user_id]}
        )
        self.say(f"direct conversation {conversation['id']} (last seq {conversation['last_seq']})")
        return str(conversation["id"])

    async def send(self, conversation_id: str, body: str, client_id: str | None = None) -> Json:
        """Queue a message; returns the api's 202 answer with the message's `id` and `seq`.

        The `client_id` makes the send idempotent: if the answer is lost on the way back, sending
        again with the same one gets the same message (same `id`, same `seq`), never a duplicate.
        That is what makes it safe to retry after a network error, a 503 or a 429.
        """
        client_id = client_id or uuid.uuid4().hex
        payload = {"body": body, "client_id": client_id}
        for attempt in range(SEND_ATTEMPTS):
            try:
                response = await self._request(
                    "POST", f"/conversations/{conversation_id}/messages", json=payload
                )
            except httpx.TransportError as exc:  # refused, reset, timed out: we don't know if it arrived
                delay = backoff(attempt)
                self.say(f"send failed ({type(exc).__name__}); same client_id again in {delay:.1f} s")
                await asyncio.sleep(delay)
                continue
            if response.status_code in (429, 503):  # rate limited, or Postgres/Redis away for a moment
                delay = retry_after(response) or backoff(attempt)
                self.say(f"send answered {response.status_code}; retrying after {delay:g} s (Retry-After)")
                await asyncio.sleep(delay)
                continue
            if response.status_code != 202:  # 409 (client_id reused with another body), 403, 422...
                raise ApiError(response)
            accepted: Json = response.json()
            return accepted
        raise RuntimeError(f"gave up sending {body!r} after {SEND_ATTEMPTS} attempts")

    async def history(self, conversation_id: str, after: int | None = None) -> list[Json]:
        """Messages in ascending seq: after `after` (paging forward), or else the newest page."""
        items: list[Json] = []
        while True:
            params: dict[str, int] = {"limit": 200}
            if after is not None:
                params["after"] = after
            page = await self._call("GET", f"/conversations/{conversation_id}/messages", params=params)
            items += page["items"]
            if after is None or not page["has_more"]:
                return items
            after = page["items"][-1]["seq"]

    # --- WebSocket --------------------------------------------------------------------------

    async def listen(self) -> None:
        """Keep a WebSocket open until stop(), reconnecting after every close.

        Each close code says what to do (docs/api.md): 1012 (server restarting) and 4408 (we fell
        behind) reconnect at once; 4401 refreshes the token first; 4429 waits the seconds in the
        reason; 1011 and network errors back off exponentially. Back-off grows while attempts keep
        failing and starts over once a connection reaches `ready`.
        """
        attempt = 0
        while not self._stopping:
            token = self._access_token
            code: int | None = None
            reason = ""
            self._reached_ready = False
            try:
                code, reason = await self._connect_once(token)
            except (OSError, TimeoutError, InvalidHandshake, httpx.HTTPError, ApiError) as exc:
                # The network, the handshake, or the REST catch-up failed: all worth another try.
                reason = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            if self._stopping:
                return
            if self._reached_ready:  # that connection was healthy: start the back-off over
                attempt = 0
            self.say(
                f"socket closed: {code} {reason}" if code is not None else f"could not connect: {reason}"
            )

            if code == 4401:  # token missing, invalid or expired
                try:
                    await self.refresh_tokens(token)
                except (httpx.HTTPError, ApiError) as exc:  # the next try gets 4401 again, and backs off
                    self.say(f"could not refresh the token: {exc}")
            if code == 4429:  # "too many sockets; retry after 5 s"
                match = re.search(r"retry after (\d+)", reason)
                delay = float(match[1]) if match else 5.0
            elif attempt == 0 and code in (1012, 4408, 4401):
                delay = random.uniform(0, 0.5)  # "at once", spread a little over a restart's clients
            else:
                delay = backoff(attempt)
            attempt += 1
            self.say(f"reconnecting in {delay:.1f} s with last_event_id={self.last_event_id}")
            await asyncio.sleep(delay)

    async def _connect_once(self, token: str) -> tuple[int | None, str]:
        """One connection, from handshake to close; returns the close code and reason."""
        if not self._network_up.is_set():
            raise ConnectionRefusedError("network is down (demo)")
        resuming = self.last_event_id is not None
        url = self.push + (f"?{urlencode({'last_event_id': self.last_event_id})}" if resuming else "")
        # Browsers must put the token in the query (?token=); a native client can use the header,
        # which keeps the token out of URLs and proxy logs.
        async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            self._ws = ws
            replaying = resuming  # frames before `ready` are the replay of what we missed
            try:
                async for raw in ws:
                    frame: Json = json.loads(raw)
                    if frame["type"] == "ready":
                        replaying = False
                        await self._on_ready(frame, resuming)
                    elif frame["type"] == "resync_required":
                        # Our last_event_id is older than what the server keeps: REST has the rest.
                        self.say("resync_required: fetching history over REST")
                        self.last_event_id = None
                        await self._catch_up_over_rest()
                    elif "event_id" in frame:
                        self._on_event(frame, "replay" if replaying else "live")
                    # typing, pong and error frames need nothing here.
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
            return ws.close_code, ws.close_reason or ""

    async def _on_ready(self, frame: Json, resuming: bool) -> None:
        if resuming:
            self.say(f"resumed: {frame['replayed']} missed events replayed, now live")
        else:
            # Without a last_event_id the server replays nothing, so anything sent before this
            # socket opened is only in REST. (Resume from ready's last_event_id only after such a
            # fetch: an event just before it can still arrive after `ready`.)
            self.say("connected, now live")
            await self._catch_up_over_rest()
        self._reached_ready = True
        self.connected.set()

    def _on_event(self, frame: Json, via: str) -> None:
        event_id: str = frame["event_id"]
        if event_id in self._seen_event_ids:
            self.say(f"duplicate event {event_id} ignored")
            return
        self._seen_event_ids.add(event_id)
        self.last_event_id = event_id  # events arrive in increasing event_id order
        if frame["type"] in ("message.created", "message.updated", "message.deleted"):
            self._keep_message(frame["data"], via)

    def _keep_message(self, message: Json, via: str) -> bool:
        """Store a message by seq, once however often it comes; True if it is new."""
        by_seq = self.messages.setdefault(message["conversation_id"], {})
        seq: int = message["seq"]
        known = by_seq.get(seq)
        if known == message:
            return False
        by_seq[seq] = message  # new, or an edit or delete of one we have
        self._new_message.set()
        if known is None:
            self.arrived_via[message["id"]] = via
            if via != "rest":
                self.say(f"received #{seq} {message['body']!r} ({via})")
        return known is None

    async def _catch_up_over_rest(self) -> None:
        """Fetch what the socket cannot give us: newer messages of every conversation we are in."""
        page = await self._call("GET", "/conversations", params={"limit": 50})
        fetched = 0
        for conversation in page["items"]:
            known = self.messages.get(conversation["id"])
            # A conversation we know continues after its newest seq; a new one starts at its newest page.
            after = max(known) if known else None
            for message in await self.history(conversation["id"], after=after):
                fetched += self._keep_message(message, "rest")
        self.say(f"caught up over REST: {fetched} new messages")

    async def wait_for(self, conversation_id: str, seqs: list[int]) -> None:
        """Until every one of `seqs` has arrived (wrap it in asyncio.timeout)."""
        while not set(seqs) <= self.messages.get(conversation_id, {}).keys():
            self._new_message.clear()
            await self._new_message.wait()

    @contextlib.asynccontextmanager
    async def network_outage(self) -> AsyncIterator[None]:
        """Demo only: the network fails (the socket drops, reconnects fail) until the block ends."""
        self._network_up.clear()
        self.connected.clear()
        if self._ws is not None:
            await self._ws.close(4000, "demo: network outage")
        try:
            yield
        finally:
            self._network_up.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        await self._http.aclose()
