"""The docs' shell blocks (README, docs/operations.md, CONTRIBUTING), run as written on a fresh clone.

Every ```sh block runs, in document order, in one shell session's worth of state (what a block
exports, the next one sees), in a copy of the repository whose `.venv` is the virtualenv running
these tests: a fresh clone after `make dev` or `make test`. The PATH starts without that virtualenv,
so a block must activate it as a reader would. A block that cannot run here says so in an HTML
comment on the line before it, `<!-- docs-test: skip (why) -->`, and every other block must run.

What stays the test's own: the values a reader fills in (DATABASE_URL and REDIS_URL point at a fresh
database and the e2e Redis database, set right after the docs set them), a placeholder in capitals
(JOB_ID: a real dead letter, a new one each time), and honcho's first port ($PORT, since 5000 may be
taken on a shared machine). A line that starts servers (`honcho start web worker push`) runs in the
background until the end, as in a second terminal: each process must log where it listens, answer
there, and stop on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio

from chat.jobqueue import deadletters
from chat.jobqueue.enqueue import QueueWriter
from chat.settings import Settings
from tests.support import services
from tests.support.docblocks import Block, blocks
from tests.support.stack import E2E_REDIS_URL, ROOT, free_ports_at

DOCS = ["README.md", "docs/operations.md", "CONTRIBUTING.md"]
READER_SETS = ("DATABASE_URL", "REDIS_URL")
SERVERS = {"web", "worker", "push"}
# What each process logs once it listens, as the README quotes it.
ANNOUNCES = {
    "web": (r"api serving http://0\.0\.0\.0:(\d+)/api/v1", "/healthz"),
    "worker": (r"worker metrics on http://0\.0\.0\.0:(\d+)/metrics", "/metrics"),
    "push": (r"push serving ws://0\.0\.0\.0:(\d+)/ws", "/healthz"),
}
QUEUE = "arq:queue"


def is_server(line: str) -> bool:
    """`honcho start` with a long-running line (or all of them); `honcho start release` exits."""
    if not line.startswith("honcho start"):
        return False
    words = shlex.split(line, comments=True)
    named = {w for w in words[2:] if not w.startswith("-") and "=" not in w}
    return not named or bool(named & SERVERS)


def free_base() -> int:
    """A first port for honcho whose steps of 100 (and a few workers above each) are free."""
    return free_ports_at(p + k for p in (0, 100, 200) for k in range(3))


class Reader:
    """A reader's shell on a fresh clone: the state each block leaves behind, and what it started."""

    def __init__(self, clone: Path, env: dict[str, str], provided: dict[str, str], logs: Path) -> None:
        self.clone = clone
        self.env = env
        self.provided = provided
        self.logs = logs
        self.servers: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.set_by_docs: set[str] = set()

    def run(self, block: Block) -> None:
        chunk: list[str] = []
        for line in block.text.splitlines():
            if is_server(line):
                self.script(block, chunk)
                chunk = []
                self.serve(block, line)
                continue
            chunk.append(fill_placeholders(line, self.env))
            for name in READER_SETS:
                if re.search(rf"\b{name}=", line):
                    self.set_by_docs.add(name)
                    chunk.append(f"export {name}={shlex.quote(self.provided[name])}  # the test's own")
        self.script(block, chunk)

    def script(self, block: Block, lines: list[str]) -> None:
        if not any(line.strip() and not line.lstrip().startswith("#") for line in lines):
            return
        state = self.logs / f"env-{uuid.uuid4().hex[:8]}"
        text = "set -ex\n" + "\n".join(lines) + f'\nenv -0 > "{state}"\n'
        done = subprocess.run(
            ["/bin/sh", "-c", text], cwd=self.clone, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"
        pairs = (entry.split("=", 1) for entry in state.read_text().split("\0") if "=" in entry)
        self.env = dict(pairs)

    def serve(self, block: Block, line: str) -> None:
        log = self.logs / f"server-{len(self.servers)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {line}"],
                cwd=self.clone,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.servers.append((block.where, popen, log))
        named = [w for w in shlex.split(line, comments=True)[2:] if w in SERVERS] or sorted(SERVERS)
        base = int(self.env.get("PORT", "5000"))
        for step, name in enumerate(named):
            pattern, path = ANNOUNCES[name]
            port = int(wait_for(popen, log, pattern)[1])
            assert port == base + 100 * step, f"{name} on {port}, not where the README says honcho puts it"
            answer = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert answer.status_code == 200, f"{name}: {answer.status_code} {answer.text}"

    def stop(self) -> None:
        """Ctrl-C, as in the reader's terminal: honcho stops every process it started."""
        for where, popen, log in self.servers:
            # honcho's children run in sessions of their own; it logs their pids.
            children = [int(pid) for pid in re.findall(rb"started \(pid=(\d+)\)", log.read_bytes())]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGINT)
            try:
                popen.wait(20)
            except subprocess.TimeoutExpired:
                for pid in [popen.pid, *children]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                popen.wait(5)
                raise AssertionError(f"{where}: honcho did not stop on Ctrl-C") from None
            output = log.read_text(errors="replace")
            assert children and not any(alive(pid) for pid in children), f"{where}: left running\n{output}"
            assert "Traceback" not in output, f"{where}:\n{output}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(popen: subprocess.Popen[bytes], log: Path, pattern: str, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found
        assert popen.poll() is None, f"exited with {popen.returncode}:\n{log.read_text(errors='replace')}"
        time.sleep(0.1)
    raise AssertionError(f"nothing logged {pattern!r}:\n{log.read_text(errors='replace')}")


def fill_placeholders(line: str, env: dict[str, str]) -> str:
    return re.sub(r"\bJOB_ID\b", lambda _: asyncio.run(dead_letter(env["REDIS_URL"])), line)


async def dead_letter(redis_url: str) -> str:
    """A job for a function no worker knows: the running worker sends it to the dead letters at once."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        job_id = f"docs-test:{uuid.uuid4().hex[:8]}"
        assert await QueueWriter(client, QUEUE).enqueue("no_such_function", [{}], job_id)
        for _ in range(100):
            if await deadletters.get(client, job_id):
                return job_id
            await asyncio.sleep(0.1)
        raise AssertionError(f"no worker turned {job_id} into a dead letter (is the worker running?)")
    finally:
        await client.aclose()


def fresh_clone(into: Path) -> Path:
    clone = into / "headless-chat"
    ignore = shutil.ignore_patterns(".git", ".venv", ".env", "*.db", "*.db-*", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, clone, ignore=ignore, symlinks=True)
    (clone / ".venv").symlink_to(sys.prefix)  # what `make dev` / `make test` would have built
    return clone


def reader_environment(clone: Path) -> dict[str, str]:
    venv_bins = {str(Path(sys.executable).parent), str(Path(sys.prefix) / "bin")}
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p not in venv_bins]
    # Nothing the processes read may leak in from the environment running the tests.
    ours = {name.upper() for name in Settings.model_fields} | {"VIRTUAL_ENV", "PORT", "HOST", "LOG_LEVEL"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    # The clone's code, even where the virtualenv's editable install points at another checkout.
    env |= {"PATH": os.pathsep.join(path), "PYTHONPATH": str(clone), "PORT": str(free_base())}
    return env


@pytest.fixture
def database() -> Iterator[str]:
    name = services.create_database()
    try:
        yield services.database_url(name)
    finally:
        services.drop_database(name)


def test_the_docs_shell_blocks_work_as_written(database: str, tmp_path: Path) -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("the docs activate .venv: run the tests from the virtualenv make builds")
    services.check_redis()
    flushed = redis.Redis.from_url(E2E_REDIS_URL)
    flushed.flushdb()
    flushed.close()

    every = [block for doc in DOCS for block in blocks(doc)]
    runnable = [block for block in every if block.skip is None]
    assert any("honcho start release" in b.text for b in runnable), "the README runs the release line"
    assert any(is_server(line) for b in runnable for line in b.text.splitlines())

    clone = fresh_clone(tmp_path)
    reader = Reader(
        clone,
        reader_environment(clone),
        {"DATABASE_URL": database, "REDIS_URL": E2E_REDIS_URL},
        tmp_path,
    )
    ran = []
    try:
        for block in runnable:
            reader.run(block)
            ran.append(block.where)
    finally:
        reader.stop()
    assert ran == [b.where for b in runnable]
    assert reader.set_by_docs == set(READER_SETS), "the README shows what to export"
