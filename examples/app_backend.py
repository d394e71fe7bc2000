"""A tiny "your app's backend": it logs in its own users and hands each a headless-chat token.

    APP_JWT_SECRET=... python examples/app_backend.py --port 8002
    SERVER_KEY=... python examples/app_backend.py --port 8002 --server-key --chat-api http://127.0.0.1:8000

`POST /login` with `{"username", "password"}` checks them against the app's own user table (here
a hard-coded one) and answers `{"access_token", "token_type": "bearer", "expires_in", "user"}`:
a token the chat service accepts on REST (`Authorization: Bearer`) and on the WebSocket
(`/ws?token=`). The chat service never sees the password. Two ways to make the token
(docs/integrate.md):

- by default it signs an HS256 JWT itself with `APP_JWT_SECRET`, the secret the chat service is
  configured with (`sub` is the app's user id, `name` and `preferred_username` its profile);
- with `--server-key` it asks the chat service for one, `POST /api/v1/server/tokens` with the
  server key in `SERVER_KEY` (made with `headless-chat server-keys create NAME`).

`python examples/python_client.py --app-backend http://127.0.0.1:8002 --user-a ada --user-b grace
--password ada-and-grace` runs the client demo with these tokens. Needs `pip install pyjwt httpx`.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import http.server
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

Json = dict[str, Any]
TokenSource = Callable[[Json], Json]
TTL_SECONDS = 3600

# The app's own users: in a real app, its database and its password hashing.
USERS: dict[str, Json] = {
    "ada": {"id": "user-42", "name": "Ada Lovelace", "password": "ada-and-grace"},
    "grace": {"id": "user-43", "name": "Grace Hopper", "password": "ada-and-grace"},
}


def check_login(username: str, password: str) -> Json | None:
    user = USERS.get(username)
    if user is None or not hmac.compare_digest(user["password"].encode(), password.encode()):
        return None
    return {"id": user["id"], "name": user["name"], "username": username}


def minted(secret: str) -> TokenSource:
    """Tokens signed here with the shared secret: no call to the chat service at all."""

    def token(user: Json) -> Json:
        now = int(time.time())
        claims = {
            "sub": user["id"],
            "name": user["name"],
            "preferred_username": user["username"],
            "iat": now,
            "exp": now + TTL_SECONDS,
        }
        signed = jwt.encode(claims, secret, algorithm="HS256")
        return {"access_token": signed, "token_type": "bearer", "expires_in": TTL_SECONDS}

    return token


def from_server_api(chat_api: str, server_key: str) -> TokenSource:
    """Tokens the chat service makes: one server call per login (it creates the user if new)."""
    http = httpx.Client(
        base_url=chat_api.rstrip("/").removesuffix("/api/v1") + "/api/v1",
        headers={"Authorization": f"Bearer {server_key}"},
        timeout=10,
    )

    def token(user: Json) -> Json:
        answer = http.post(
            "/server/tokens",
            json={"external_id": user["id"], "display_name": user["name"], "ttl_seconds": TTL_SECONDS},
        )
        answer.raise_for_status()
        issued: Json = answer.json()
        return issued

    return token


class LoginHandler(http.server.BaseHTTPRequestHandler):
    token_source: TokenSource  # set on the subclass serve() makes

    def do_OPTIONS(self) -> None:  # a browser's CORS preflight
        self.answer(204, None)

    def do_POST(self) -> None:
        if self.path != "/login":
            self.answer(404, {"detail": "only POST /login here"})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            user = check_login(str(body["username"]), str(body["password"]))
        except (ValueError, KeyError, TypeError):
            self.answer(400, {"detail": "send {username, password} as JSON"})
            return
        if user is None:
            self.answer(401, {"detail": "wrong username or password"})
            return
        try:
            issued = self.token_source(user)
        except httpx.HTTPError as exc:
            self.answer(502, {"detail": f"the chat service did not issue a token: {exc}"})
            return
        self.answer(200, issued | {"user": user})

    def answer(self, status: int, body: Json | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        # An example: any page may call it. A real backend names its own origins.
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        print(f"app backend: {format % args}", file=sys.stderr, flush=True)


def serve(host: str, port: int, token_source: TokenSource) -> None:
    handler = type("Handler", (LoginHandler,), {"token_source": staticmethod(token_source)})
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        # Port 0 means any free port: say which one, for whoever started us.
        print(f"app backend on http://{host}:{server.server_address[1]}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
            server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002, help="0 for any free port")
    parser.add_argument(
        "--server-key", action="store_true", help="get tokens from POST /server/tokens (SERVER_KEY)"
    )
    parser.add_argument("--chat-api", default="http://127.0.0.1:8000", help="the chat api (--server-key)")
    args = parser.parse_args()
    if args.server_key:
        if not os.environ.get("SERVER_KEY"):
            parser.error("--server-key needs SERVER_KEY (headless-chat server-keys create NAME)")
        source = from_server_api(args.chat_api, os.environ["SERVER_KEY"])
    else:
        if not os.environ.get("APP_JWT_SECRET"):
            parser.error("set APP_JWT_SECRET to the chat service's, or use --server-key")
        source = minted(os.environ["APP_JWT_SECRET"])
    serve(args.host, args.port, source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
