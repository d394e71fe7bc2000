"""docs/integrate.md, run as written against the real processes (web, worker, push).

The page's ```python and ```js blocks are files a reader saves (the first line names the file);
they are written to a working directory, and its ```sh blocks run there in document order, in one
shell's worth of state (what a block exports, the next one sees), with the virtualenv's `python`
and `headless-chat` and node on the PATH. A block that cannot run says so on the line before it,
`<!-- docs-test: skip (why) -->`.

What stays the test's own, set right after the page sets it: the chat service's URLs
(CHAT_API, CHAT_WS) and APP_JWT_SECRET (the stack is started with it). The working directory is
served over HTTP as the stack's APP_JWKS_URL, so the `jwks.json` the page makes is the JWKS the
chat service reads.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from tests.support.docblocks import Block, blocks
from tests.support.stack import Process, Stack

DOC = "docs/integrate.md"
LANGUAGES = ("sh", "python", "js")
FILE_NAME = re.compile(r"(?:#|//) ([\w.-]+\.(?:py|js))\b")
APP_SECRET = "integrate-docs-" + "s" * 40


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("app-backend")


@pytest.fixture(scope="module")
def jwks_url(workdir: Path) -> Iterator[str]:
    """The reader's working directory over HTTP: jwks.json there is the app's JWKS."""
    handler = functools.partial(QuietHandler, directory=str(workdir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def app_env(jwks_url: str) -> dict[str, str]:
    # The JWKS floor low, so that the page's wait for a new key's cache time is a second.
    return {"APP_JWT_SECRET": APP_SECRET, "APP_JWKS_URL": jwks_url, "APP_JWKS_MIN_REFRESH_SECONDS": "1"}


@pytest.fixture(scope="module")
def processes(stack: Stack, app_env: dict[str, str]) -> dict[str, Process]:
    return {kind: stack.start(kind, wait=True, **app_env) for kind in ("web", "worker", "push")}


class Reader:
    """A reader's shell in their working directory, and what each block printed."""

    def __init__(self, workdir: Path, env: dict[str, str], provided: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.provided = provided
        self.printed: dict[str, str] = {}

    def save(self, block: Block) -> str:
        named = FILE_NAME.match(block.text)
        assert named, f"{block.where}: the first line names the file the reader saves it as"
        (self.workdir / named[1]).write_text(block.text + "\n")
        return named[1]

    def run(self, block: Block) -> None:
        lines: list[str] = []
        for line in block.text.splitlines():
            lines.append(line)
            for name, value in self.provided.items():
                if re.match(rf"\s*(export\s+)?{name}=", line):
                    assert not line.endswith("\\"), f"{block.where}: set {name} on one line"
                    lines.append(f"export {name}='{value}'  # the test's own")
        state = self.workdir / f".env-{uuid.uuid4().hex[:8]}"
        script = "set -e\n" + "\n".join(lines) + f'\nenv -0 > "{state}"\n'
        done = subprocess.run(
            ["/bin/sh", "-c", script],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"
        self.printed[block.where] = done.stdout
        pairs = (entry.split("=", 1) for entry in state.read_text().split("\0") if "=" in entry)
        self.env = dict(pairs)
        state.unlink()


def reader_env(stack: Stack, app_env: dict[str, str]) -> dict[str, str]:
    """The chat service's settings (the CLI reads them) and the virtualenv's commands first."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, **stack.env, **app_env, "PATH": path}


def json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects a block printed (curl adds no newline after a body)."""
    found: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at != -1:
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = text.find("{", end)
    return found


def printed_by(reader: Reader, first_line: str) -> str:
    return next(out for where, out in reader.printed.items() if block_at(where).startswith(first_line))


def block_at(where: str) -> str:
    return next(b.text for b in blocks(DOC, LANGUAGES) if b.where == where)


def test_integrate_md_runs_as_written(
    stack: Stack, processes: dict[str, Process], app_env: dict[str, str], workdir: Path
) -> None:
    every = blocks(DOC, LANGUAGES)
    runnable = [b for b in every if b.skip is None]
    assert {b.language for b in runnable} == set(LANGUAGES)
    provided = {
        "CHAT_API": processes["web"].url + "/api/v1",
        "CHAT_WS": processes["push"].ws_url,
        "APP_JWT_SECRET": APP_SECRET,
    }
    reader = Reader(workdir, reader_env(stack, app_env), provided)
    saved = [reader.save(b) for b in runnable if b.language != "sh"]
    shell = [b for b in runnable if b.language == "sh"]
    for block in shell:
        reader.run(block)
    unused = [name for name in saved if not any(name in b.text for b in shell)]
    assert not unused, f"saved but never run by a sh block: {unused}"

    # What the page says each step shows.
    ada, grace = json_objects(printed_by(reader, "export CHAT_API="))
    assert (ada["external_id"], ada["display_name"]) == ("user-42", "Ada Lovelace")
    assert (grace["external_id"], grace["display_name"]) == ("user-43", "Grace Hopper")
    ready = json_objects(printed_by(reader, "python - <<'EOF'"))[0]
    assert (ready["type"], ready["user_id"]) == ("ready", ada["id"])
    assert printed_by(reader, 'curl -fsS -X POST "$CHAT_API/server/users/user-43/deactivate"').split() == [
        "204",
        "401",
        "204",
    ]
    assert printed_by(reader, "JOB=$(curl").split() == ["erasure", "complete"]
    # Both ES256 tokens (the old kid and the new) were Ada.
    rotation = json_objects(printed_by(reader, "python make_key.py key-2026-11"))
    assert [user["id"] for user in rotation] == [ada["id"], ada["id"]]


async def test_moving_an_account_over_keeps_it(processes: dict[str, Process], stack: Stack) -> None:
    """The page's one-off UPDATE: the first app token for that external_id is the old account."""
    skipped = next(b for b in blocks(DOC) if b.skip and "UPDATE users" in b.text)
    statement = re.search(r'-c "(UPDATE users [^"]+)"', skipped.text)
    assert statement, skipped.text
    username, external_id = f"old{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=processes["web"].url + "/api/v1", timeout=10) as http:
        old = {"username": username, "password": "old password"}
        registered = await http.post("/auth/register", json=old)
        assert registered.status_code == 201, registered.text
        sql = statement[1].replace("'user-42'", f"'{external_id}'").replace("'ada'", f"'{username}'")
        db = await asyncpg.connect(
            stack.env["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            assert await db.execute(sql) == "UPDATE 1"
        finally:
            await db.close()
        now = int(time.time())
        token = jwt.encode({"sub": external_id, "iat": now, "exp": now + 600}, APP_SECRET, algorithm="HS256")
        me = await http.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert (me.json()["id"], me.json()["username"], me.json()["external_id"]) == (
        registered.json()["id"],
        username,
        external_id,
    )
