"""The example clients in examples/ run their whole flow against dev mode (`python -m devserver`).

No Postgres or Redis needed: dev mode is SQLite and an in-process Redis, started in a temp dir on
free ports, as tests/e2e/test_dev_mode.py does. The browser page is served by a tiny static server
of its own, so its origin is http://127.0.0.1:PORT and the api must allow it through CORS.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import WAIT, console
from tests.support.stack import ROOT, DevServer, dev_server

pytestmark = pytest.mark.e2e

EXAMPLES = ROOT / "examples"
PASSWORD = "examples-password"
APP_SECRET = "examples-app-secret-" + "x" * 32
APP_PASSWORD = "ada-and-grace"  # examples/app_backend.py's users' password


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    """examples/ over HTTP, as a developer would serve the page."""
    handler = functools.partial(QuietHandler, directory=str(EXAMPLES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def dev(static_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    env = {
        "ENVIRONMENT": "dev",
        # This worktree's code, whatever the virtualenv's editable install points at.
        "PYTHONPATH": str(ROOT),
        "CORS_ALLOWED_ORIGINS": static_url,
        # Low enough that the Python example's bursts meet 429s and must honour Retry-After.
        "RATE_LIMIT_SENDS_PER_USER": "2/second",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "LOG_LEVEL": "WARNING",
        # examples/app_backend.py signs its users' chat tokens with it.
        "APP_JWT_SECRET": APP_SECRET,
    }
    with dev_server(tmp_path_factory.mktemp("dev"), env) as dev:
        yield dev


def run_python_client(dev: DevServer, *options: str) -> str:
    """examples/python_client.py against dev mode; what it printed, once it exited 0."""
    example = [sys.executable, str(EXAMPLES / "python_client.py"), "--api", dev.api, "--push", dev.push]
    done = subprocess.run(
        [*example, *options, "--timeout", "25"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_python_client_runs_the_demo(dev: DevServer) -> None:
    out = run_python_client(dev, "--user-a", "py_alice", "--user-b", "py_bob", "--password", PASSWORD)
    assert "[py_alice] registered" in out and "[py_bob] registered" in out
    assert "re-sent #1 with the same client_id: got #1, no duplicate" in out
    assert "send answered 429; retrying after 1 s (Retry-After)" in out
    assert "[py_bob] socket closed: 4000 demo: network outage" in out
    assert "[py_bob] resumed: 3 missed events replayed, now live" in out
    for seq in (4, 5, 6):
        assert f"[py_bob] received #{seq} 'sent during the outage {seq - 3}' (replay)" in out
    assert "duplicate" not in out.replace("no duplicate", "")
    assert out.rstrip().endswith(
        "OK: 8 messages received once each in seq order, "
        "3 of them sent while py_bob was offline and replayed on resume"
    )


@contextlib.contextmanager
def app_backend(*options: str, **env: str) -> Iterator[str]:
    """examples/app_backend.py on a free port; yields its URL once it says where it listens."""
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / "app_backend.py"), "--port", "0", *options],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as backend:
        assert backend.stdout is not None
        try:
            line = backend.stdout.readline()
            started = re.fullmatch(r"app backend on (http://127\.0\.0\.1:\d+)\n", line)
            assert started, f"app_backend.py printed {line!r} (exit {backend.poll()})"
            yield started[1]
        finally:
            backend.terminate()
            backend.wait(10)


def run_client_through(dev: DevServer, backend: str) -> str:
    """The Python demo, its two users logging in to the app backend for their chat tokens."""
    users = ["--user-a", "ada", "--user-b", "grace", "--password", APP_PASSWORD]
    out = run_python_client(dev, "--app-backend", backend, *users)
    assert "[ada] signed in through the app backend" in out and "registered" not in out
    assert "[grace] resumed: 3 missed events replayed, now live" in out
    assert out.rstrip().endswith(
        "OK: 8 messages received once each in seq order, "
        "3 of them sent while grace was offline and replayed on resume"
    )
    return out


def test_python_client_gets_its_token_from_the_app_backend(dev: DevServer) -> None:
    """The app backend signs HS256 tokens with APP_JWT_SECRET: the client never registers."""
    with app_backend(APP_JWT_SECRET=APP_SECRET) as backend:
        wrong = httpx.post(f"{backend}/login", json={"username": "ada", "password": "not hers"})
        assert wrong.status_code == 401
        login = httpx.post(f"{backend}/login", json={"username": "ada", "password": APP_PASSWORD})
        assert login.status_code == 200, login.text
        me = httpx.get(
            f"{dev.api}/api/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
        )
        assert me.status_code == 200, me.text
        assert (me.json()["external_id"], me.json()["display_name"]) == ("user-42", "Ada Lovelace")
        run_client_through(dev, backend)


def test_app_backend_with_a_server_key(dev: DevServer) -> None:
    """`--server-key`: the app backend gets each token from POST /server/tokens."""
    # The CLI on dev mode's machine: nothing configured, as dev_server runs it.
    configured = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}
    unconfigured = {k: v for k, v in os.environ.items() if k not in configured}
    created = subprocess.run(
        [str(Path(sys.executable).parent / "headless-chat"), "server-keys", "create", "examples-app"],
        cwd=dev.log.parent,  # dev mode's database is the SQLite file there
        env={**unconfigured, "ENVIRONMENT": "dev", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    key = created.stdout.strip().splitlines()[-1]
    with app_backend("--server-key", "--chat-api", dev.api, SERVER_KEY=key) as backend:
        run_client_through(dev, backend)


def test_readme_try_it_runs(dev: DevServer) -> None:
    """README's "Try it with curl": the curl block as pasted into a shell, then Bob's WebSocket
    with the interactive client it shows, as in another terminal. Only the ports differ."""
    section = (ROOT / "README.md").read_text().split("## Try it with curl", 1)[1].split("\n## ", 1)[0]
    curl, cli, _ = (
        block.replace("http://127.0.0.1:8000/", f"{dev.api}/").replace("ws://127.0.0.1:8001/", f"{dev.push}/")
        for block in re.findall(r"```sh\n(.*?)```", section, re.S)
    )
    # The reader's shell keeps the variables; print them to use them here.
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", curl + 'echo "$ALICE $BOB $CONV"'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    *answers, variables = done.stdout.splitlines()
    alice, bob, sent, history = map(json.loads, answers)
    assert (alice["username"], bob["username"]) == ("alice", "bob")
    assert sent["status"] == "queued" and sent["seq"] == 1
    # The block waits for the worker to store the message, as a client would, before reading.
    assert [m["body"] for m in history["items"]] == ["hello Bob"]
    alice_token, bob_token, conversation = variables.split()

    command = cli.strip().splitlines()[-1]
    assert command.startswith("python -m websockets "), command
    printed: list[str] = []

    def prints(text: str) -> None:
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in printed):
            assert socket.poll() is None and time.monotonic() < deadline, "".join(printed)
            time.sleep(0.05)

    with subprocess.Popen(
        ["bash", "-c", command.replace("python", shlex.quote(sys.executable), 1)],
        env={**os.environ, "TOKEN": bob_token, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as socket:
        assert socket.stdin is not None and socket.stdout is not None
        output = socket.stdout

        def read() -> None:
            for line in output:
                printed.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            prints('"type":"ready"')
            socket.stdin.write('{"type": "ping"}\n')
            socket.stdin.flush()
            prints('"type":"pong"')
            again = httpx.post(
                f"{dev.api}/api/v1/conversations/{conversation}/messages",
                json={"body": "hello again", "client_id": "hello-2"},
                headers={"Authorization": f"Bearer {alice_token}"},
            )
            assert again.status_code == 202, again.text
            prints('"body":"hello again"')
        finally:
            socket.stdin.close()  # Ctrl-D
            try:
                socket.wait(10)
            except subprocess.TimeoutExpired:
                socket.kill()
                raise
            reader.join(5)
    assert "Connection closed: 1000" in "".join(printed)


def test_browser_page_runs_the_flow(dev: DevServer, static_url: str, browser: WebDriver) -> None:
    alice, bob = f"web_a{uuid.uuid4().hex[:8]}", f"web_b{uuid.uuid4().hex[:8]}"
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{static_url}/browser.html")
    for field, value in {
        "api-url": dev.api,
        "push-url": dev.push,
        "user-a": alice,
        "user-b": bob,
        "password": PASSWORD,
    }.items():
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "start").click()

    def socket_state() -> str | None:
        return browser.find_element(By.ID, "ws-state").get_attribute("data-state")

    def log() -> str:
        return browser.find_element(By.ID, "log").get_attribute("textContent") or ""

    def shown() -> list[tuple[int, str, str]]:
        return [
            (
                int(li.get_attribute("data-seq") or 0),
                li.find_element(By.CLASS_NAME, "body").text,
                li.get_attribute("data-via") or "",
            )
            for li in browser.find_elements(By.CSS_SELECTOR, "#messages li")
        ]

    sent: list[str] = []

    def send(body: str) -> int:
        """Send as A and wait for the 202; returns the seq."""
        browser.find_element(By.ID, "body").send_keys(body)
        browser.find_element(By.ID, "send").click()
        sent.append(body)
        item = f"#out-{len(sent)}"
        wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, item).get_attribute("data-state") == "queued",
            f"{body!r} was not accepted: {log()}",
        )
        return int(browser.find_element(By.CSS_SELECTOR, item).get_attribute("data-seq") or 0)

    def shows(count: int) -> None:
        wait.until(lambda d: len(shown()) >= count, f"B shows {shown()}, not {count} messages: {log()}")

    wait.until(lambda d: socket_state() == "live", f"B's socket never went live: {log()}")
    send("one")
    send("two")
    shows(2)

    # A dropped connection reconnects by itself, resuming from the last event_id.
    browser.find_element(By.ID, "drop").click()
    send("three")
    wait.until(lambda d: "resumed:" in log(), f"no resume after the drop: {log()}")
    shows(3)

    # A longer outage: what A sends meanwhile comes back through the replay.
    browser.find_element(By.ID, "offline").click()
    wait.until(lambda d: "network is down" in log(), log())
    offline = [send("four"), send("five")]
    wait_until_stored(dev.api, alice, offline)
    browser.find_element(By.ID, "offline").click()
    shows(5)
    wait.until(lambda d: socket_state() == "live", log())
    send("six")
    shows(6)

    messages = shown()
    assert [body for _, body, _ in messages] == sent, (messages, log())
    seqs = [seq for seq, _, _ in messages]
    assert seqs == sorted(set(seqs)) and len(seqs) == len(sent)
    assert {seq: via for seq, _, via in messages if seq in offline} == dict.fromkeys(offline, "replay")
    assert log().count("resumed:") == 2
    # Statuses the page handles (a 429, say) show as failed loads; nothing else may be logged.
    errors = [
        entry["message"]
        for entry in console(browser)
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    assert not errors, errors


def wait_until_stored(api: str, username: str, seqs: list[int]) -> None:
    """Until a worker stored these messages, so that B's stream holds them when it reconnects."""
    with httpx.Client(base_url=f"{api}/api/v1", timeout=10) as http:
        token = http.post("/auth/login", json={"username": username, "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        conversation = http.get("/conversations", headers=headers).json()["items"][0]["id"]
        deadline = time.monotonic() + WAIT
        while True:
            history = http.get(f"/conversations/{conversation}/messages", headers=headers).json()
            if set(seqs) <= {m["seq"] for m in history["items"]}:
                return
            assert time.monotonic() < deadline, history
            time.sleep(0.05)


def test_browser_page_gets_its_token_from_the_app_backend(
    dev: DevServer, static_url: str, browser: WebDriver
) -> None:
    """The page's optional app backend field: both users log in there, B's socket goes live."""
    wait = WebDriverWait(browser, WAIT)
    with app_backend(APP_JWT_SECRET=APP_SECRET) as backend:
        browser.get(f"{static_url}/browser.html")
        fields = {
            "api-url": dev.api,
            "push-url": dev.push,
            "user-a": "ada",
            "user-b": "grace",
            "password": APP_PASSWORD,
            "app-backend": backend,
        }
        for field, value in fields.items():
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(value)
        browser.find_element(By.ID, "start").click()

        def log() -> str:
            return browser.find_element(By.ID, "log").get_attribute("textContent") or ""

        def live(driver: WebDriver) -> bool:
            return driver.find_element(By.ID, "ws-state").get_attribute("data-state") == "live"

        wait.until(live, f"B's socket never went live: {log()}")
        assert "[ada] signed in through the app backend" in log() and "registered" not in log()
        body = f"through the app {uuid.uuid4().hex[:6]}"
        browser.find_element(By.ID, "body").send_keys(body)
        browser.find_element(By.ID, "send").click()

        def shown(driver: WebDriver) -> bool:
            items = driver.find_elements(By.CSS_SELECTOR, "#messages li .body")
            return any(item.text == body for item in items)

        wait.until(shown, f"B never showed {body!r}: {log()}")
