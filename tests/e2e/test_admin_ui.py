"""The job dashboard in headless Chromium against the real `web` process: sign in, read, retry; and
docs/admin-ui.png, taken on a busy queue (`UPDATE_DOCS_SCREENSHOT=1 pytest tests/e2e/test_admin_ui.py`)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from chat.jobqueue import deadletters, heartbeats, jobstats
from chat.jobqueue.enqueue import QueueWriter
from chat.jobqueue.jobs import (
    EditMessage,
    PersistMessage,
    React,
    change_job_id,
    persist_job_id,
)
from chat.jobqueue.keys import in_progress_key
from chat.jobqueue.lanes import DELIVER_WEBHOOK, WEBHOOK_JOB_PREFIX
from tests.support import services
from tests.support.browser import WAIT, console
from tests.support.stack import E2E_REDIS_URL, ROOT, Process, Stack

QUEUE = "arq:queue"
WEBHOOK_QUEUE = f"{QUEUE}:webhooks"
PASSWORD = "dashboard-pass"


def register(web: Process, name: str) -> str:
    body = {"username": name, "password": PASSWORD}
    assert httpx.post(f"{web.url}/api/v1/auth/register", json=body).status_code == 201
    login = httpx.post(f"{web.url}/api/v1/auth/login", json=body)
    assert login.status_code == 200, login.text
    token: str = login.json()["access_token"]
    return token


def make_admin(stack: Stack, name: str) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "chat.cli", "make-admin", name],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        capture_output=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr.decode()


def dead_letter(
    job_id: str,
    function: str,
    error: str,
    failed_at: datetime,
    *,
    args: list[Any] | None = None,
    reason: str = "raised",
    traceback: str | None = None,
    tries: int = 3,
    worker_id: str = "w1",
) -> dict[str, Any]:
    """An entry as the worker records it (workers.runtime.finish)."""
    if traceback is None:
        traceback = f'Traceback (most recent call last):\n  File "workers/tasks.py", line 80\n{error}'
    return {
        "job_id": job_id,
        "function": function,
        "args": args
        if args is not None
        else [{"conversation_id": str(uuid.uuid4()), "seq": 7, "body": "hello"}],
        "error": error,
        "reason": reason,
        "traceback": traceback,
        "tries": tries,
        "enqueued_at": (failed_at - timedelta(seconds=4)).isoformat(),
        "failed_at": failed_at.isoformat(),
        "worker_id": worker_id,
    }


async def seed(entries: list[dict[str, Any]]) -> None:
    """Dead letters, one live worker and an hour of per-minute counts, as the worker tier writes them."""
    client = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
    try:
        for entry in entries:
            await deadletters.record(client, entry, max_count=10_000, max_age_seconds=7 * 86400)
        now = datetime.now(UTC)
        worker = {
            "id": "w1",
            "host": "e2e-host",
            "pid": 4242,
            "queue": QUEUE,
            "started_at": (now - timedelta(minutes=30)).isoformat(),
            "last_beat_at": now.isoformat(),
            "max_jobs": 50,
            "running": 0,
            "done": 1234,
            "failed": 2,
            "job_ids": [],
        }
        await heartbeats.beat(client, worker, ttl_seconds=120)
        minute = int(time.time() // 60)
        async with client.pipeline(transaction=False) as pipe:
            for ago in range(60):
                key = jobstats.minute_key(QUEUE, minute - ago)
                pipe.hset(key, mapping={"complete": 40 + (ago * 7) % 25, "failed": 3 if ago % 11 == 0 else 0})
                pipe.expire(key, jobstats.KEEP_SECONDS)
            await pipe.execute()
    finally:
        await client.aclose()


def sign_in(driver: WebDriver, name: str) -> None:
    wait = WebDriverWait(driver, WAIT)
    form = wait.until(ec.visibility_of_element_located((By.ID, "login-form")))
    form.find_element(By.ID, "username").clear()
    form.find_element(By.ID, "username").send_keys(name)
    form.find_element(By.ID, "password").clear()
    form.find_element(By.ID, "password").send_keys(PASSWORD)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def test_dashboard_signs_in_shows_a_dead_letter_and_retries_it(stack: Stack, browser: WebDriver) -> None:
    services.flush_redis(E2E_REDIS_URL)
    web = stack.start("web")
    admin, other = f"a{uuid.uuid4().hex[:10]}", f"u{uuid.uuid4().hex[:10]}"
    token = register(web, admin)
    register(web, other)
    make_admin(stack, admin)
    now = datetime.now(UTC)
    job_id = persist_job_id(uuid.uuid4(), "")
    hostile = change_job_id("edit", uuid.uuid4(), "")
    asyncio.run(
        seed(
            [
                dead_letter(hostile, "edit_message", "ValueError: <img src=x onerror=alert(1)>", now),
                dead_letter(job_id, "persist_message", "ValueError: boom", now - timedelta(seconds=1)),
            ]
        )
    )
    wait = WebDriverWait(browser, WAIT)
    browser.get(f"{web.url}/api/v1/admin/ui")

    # A user who isn't an admin is told so and lands back on the sign-in form.
    sign_in(browser, other)
    wait.until(ec.text_to_be_present_in_element((By.ID, "login-error"), "not an admin"))
    assert browser.find_element(By.ID, "dashboard").is_displayed() is False

    sign_in(browser, admin)
    row = f'tr[data-dead-letter="{job_id}"]'
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, row)))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-stat="dead"]'), "2"))
    assert "e2e-host" in browser.find_element(By.CSS_SELECTOR, 'tr[data-worker="w1"]').text
    assert "s ago" in browser.find_element(By.CSS_SELECTOR, 'tr[data-worker="w1"]').text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline")) == 2
    # Data is text, never markup.
    hostile_row = browser.find_element(By.CSS_SELECTOR, f'tr[data-dead-letter="{hostile}"]')
    assert "<img src=x onerror=alert(1)>" in hostile_row.text
    assert browser.find_elements(By.CSS_SELECTOR, "#dead-letters img") == []

    # The detail panel shows the args and the traceback; the refresh pauses while it is open.
    browser.find_element(By.CSS_SELECTOR, f'{row} [data-action="open"]').click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "detail-traceback"), "ValueError: boom"))
    assert '"seq": 7' in browser.find_element(By.ID, "detail-args").text
    browser.find_element(By.ID, "detail-close").click()
    wait.until(ec.invisibility_of_element_located((By.ID, "detail")))

    browser.find_element(By.CSS_SELECTOR, f'{row} [data-action="retry"]').click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    queue = httpx.get(f"{web.url}/api/v1/admin/queue", headers={"Authorization": f"Bearer {token}"}).json()
    assert queue["queued"] == 1 and queue["dead"] == 1
    assert queue["functions"] == {"persist_message": {"queued": 1, "in_progress": 0}}

    # Discarding asks first.
    browser.find_element(By.CSS_SELECTOR, f'tr[data-dead-letter="{hostile}"] [data-action="discard"]').click()
    wait.until(ec.alert_is_present()).accept()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#dead-letters tbody"), "No dead letters"))

    # An expired access token is renewed with the refresh token without leaving the page; when
    # that fails too, the page asks to sign in again.
    browser.execute_script("sessionStorage.setItem('access_token', 'expired')")
    wait.until(lambda d: d.execute_script("return sessionStorage.getItem('access_token')") != "expired")
    assert browser.find_element(By.ID, "dashboard").is_displayed()
    browser.execute_script(
        "sessionStorage.setItem('access_token', 'expired'); sessionStorage.setItem('refresh_token', 'x')"
    )
    wait.until(ec.text_to_be_present_in_element((By.ID, "login-error"), "sign in again"))

    # With the api gone the page keeps its data and says so.
    sign_in(browser, admin)
    wait.until(ec.visibility_of_element_located((By.ID, "dashboard")))
    web.stop()
    wait.until(ec.text_to_be_present_in_element((By.ID, "error-banner"), "unreachable"))
    assert browser.find_element(By.ID, "dashboard").is_displayed()

    refused = [e["message"] for e in console(browser) if "Content Security Policy" in e["message"]]
    assert refused == []


# What a production dashboard shows on an ordinary afternoon: three workers through a steady load,
# a short backlog, webhook deliveries retrying against a receiver that is down, and the few jobs
# that failed for good in the last hour, each for a reason the worker really gives.
HOSTS = ("worker-1", "worker-2", "worker-3")
RUNNING = (3, 2, 4)  # message jobs each worker holds now
WAITING = {"persist_message": 31, "edit_message": 3, "react": 2}
WEBHOOKS_WAITING, WEBHOOKS_DEFERRED = 2, 2
HOOK_URL = "https://hooks.helpdesk.example/chat/events"


def payload(function: str, at: datetime) -> tuple[str, dict[str, Any]]:
    """A job id and payload of `function` as the api enqueues them."""
    message, conversation, user = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    if function == "persist_message":
        body = "Running 10 minutes late, start without me"
        sent = PersistMessage(
            message_id=message,
            conversation_id=conversation,
            sender_id=user,
            seq=4812,
            body=body,
            client_id=uuid.uuid4().hex,
            created_at=at,
        )
        return persist_job_id(message, ""), sent.dump()
    if function == "edit_message":
        edit = EditMessage(message_id=message, actor_id=user, body="Moved to 3 pm, room 4B", edited_at=at)
        return change_job_id("edit", message, ""), edit.dump()
    reaction = React(
        message_id=message,
        conversation_id=conversation,
        user_id=user,
        emoji="👍",
        present=True,
        changed_at=at,
    )
    return change_job_id("react", message, ""), reaction.dump()


def delivery(webhook_id: uuid.UUID, at: datetime) -> tuple[str, dict[str, Any]]:
    delivery_id = uuid.uuid4()
    event = {"type": "message.created", "conversation_id": str(uuid.uuid4()), "at": at.isoformat()}
    body = {"webhook_id": str(webhook_id), "delivery_id": str(delivery_id), "event": event}
    return f"{WEBHOOK_JOB_PREFIX}{delivery_id}", body


def busy_dead_letters(now: datetime, workers: list[str]) -> list[dict[str, Any]]:
    upload, webhook = uuid.uuid4(), uuid.uuid4()
    _, persist_args = payload("persist_message", now)
    edit_id, edit_args = payload("edit_message", now)
    hook_id, hook_args = delivery(webhook, now)
    reply_id, reply_args = payload("persist_message", now)
    frame = '  File "/app/workers/tasks.py", line {}, in {}\n'
    return [
        dead_letter(
            hook_id, DELIVER_WEBHOOK, f"DeliveryFailed: {HOOK_URL}: HTTP 503 (try 8 of 8)",
            now - timedelta(minutes=2, seconds=41), args=[hook_args], tries=8, worker_id=workers[1],
            traceback="Traceback (most recent call last):\n" + frame.format(57, "run")
            + '  File "/app/workers/webhooks.py", line 134, in deliver_webhook\n'
            + f"workers.webhooks.DeliveryFailed: {HOOK_URL}: HTTP 503 (try 8 of 8)\n",
        ),
        dead_letter(
            persist_job_id(uuid.UUID(persist_args["message_id"]), ""), "persist_message",
            f"NotUploaded: Upload {upload} is not uploaded yet: PUT its bytes to its upload_url first.",
            now - timedelta(minutes=11, seconds=5), args=[{**persist_args, "attachments": [str(upload)]}],
            tries=12, worker_id=workers[0],
            traceback="Traceback (most recent call last):\n" + frame.format(57, "run")
            + frame.format(101, "persist_message")
            + '  File "/app/chat/domain/attachments.py", line 131, in ready\n'
            + f"chat.domain.attachments.NotUploaded: Upload {upload} is not uploaded yet: PUT its bytes"
            " to its upload_url first.\n",
        ),
        {
            **dead_letter(
                edit_id, "edit_message", "TimeoutError: the job ran over 30.0 s", now - timedelta(minutes=26),
                args=[edit_args], reason="timeout", tries=12, worker_id=workers[2],
            ),
            "traceback": None,  # cancelled from outside: the worker keeps no traceback of a timeout
        },
        dead_letter(
            reply_id, "persist_message",
            "ForeignKeyViolationError: SQLSTATE 23503, constraint fk_messages_reply_to_messages"
            " (message withheld: it can quote parameters)",
            now - timedelta(minutes=47, seconds=12), args=[{**reply_args, "reply_to": str(uuid.uuid4())}],
            tries=1, worker_id=workers[0],
            traceback="Traceback (most recent call last):\n" + frame.format(57, "run")
            + frame.format(108, "persist_message")
            + '  File "/app/workers/batch.py", line 212, in _write\n'
            + "asyncpg.exceptions.ForeignKeyViolationError: SQLSTATE 23503, constraint"
            " fk_messages_reply_to_messages (message withheld: it can quote parameters)\n",
        ),
    ]  # fmt: skip


async def seed_busy_queue() -> dict[str, Any]:
    """The queues, workers, per-minute counts and dead letters of a busy hour, written as the api and
    the worker tier write them; returns what the dashboard should then show."""
    client = redis.asyncio.Redis.from_url(E2E_REDIS_URL)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    rng = random.Random(22)  # the same picture on every run
    try:
        messages, webhooks = QueueWriter(client, QUEUE), QueueWriter(client, WEBHOOK_QUEUE)
        # Oldest first, the oldest 1.4 s old: three workers drain about 45 jobs a second.
        functions = [f for f, n in WAITING.items() for _ in range(n)] + ["persist_message"] * sum(RUNNING)
        rng.shuffle(functions)
        held: list[str] = []
        for i, function in enumerate(functions):
            job_id, body = payload(function, now)
            await messages.enqueue(function, [body], job_id)
            await client.zadd(QUEUE, {job_id: now_ms - 1400 + i * 30}, xx=True)
            held.append(job_id)
        # The workers hold the oldest jobs: the others wait behind them.
        running = held[: sum(RUNNING)]
        for job_id in running:
            await client.set(in_progress_key(job_id), b"1", px=30_000)
        webhook = uuid.uuid4()
        for i in range(WEBHOOKS_WAITING + WEBHOOKS_DEFERRED):
            job_id, body = delivery(webhook, now)
            await webhooks.enqueue(DELIVER_WEBHOOK, [body], job_id)
            # Two wait for their back-off after the receiver answered 503, two are due.
            due = now_ms + 20_000 + i * 7_000 if i < WEBHOOKS_DEFERRED else now_ms - 600 + i * 100
            await client.zadd(WEBHOOK_QUEUE, {job_id: due}, xx=True)

        workers = [f"{host}-{pid}-{secrets}" for host, pid, secrets in zip(
            HOSTS, (2817, 2822, 3409), ("4fa91c", "b03e7d", "91c2aa"), strict=True
        )]  # fmt: skip
        # Two up since the morning's deploy; the third added when the load rose.
        started = (timedelta(hours=5, minutes=12), timedelta(hours=5, minutes=12), timedelta(minutes=38))
        done, failed = (184_303, 183_977, 23_519), (2, 1, 1)
        taken = 0
        for n, worker_id in enumerate(workers):
            jobs = running[taken : taken + RUNNING[n]]
            taken += RUNNING[n]
            record = {
                "id": worker_id,
                "host": HOSTS[n],
                "pid": (2817, 2822, 3409)[n],
                "queue": QUEUE,
                "started_at": (now - started[n]).isoformat(),
                "last_beat_at": (now - timedelta(milliseconds=400 + 700 * n)).isoformat(),
                "max_jobs": 50,
                "running": len(jobs),
                "lanes": [
                    {"queue": QUEUE, "max_jobs": 50, "running": len(jobs)},
                    {"queue": WEBHOOK_QUEUE, "max_jobs": 20, "running": 0},
                ],
                "done": done[n],
                "failed": failed[n],
                "job_ids": jobs,
            }
            await heartbeats.beat(client, record, ttl_seconds=120)

        # About 2,600 messages a minute, climbing through the hour, with the odd failure; the
        # current minute has only its seconds so far.
        minute = int(now.timestamp() // 60)
        async with client.pipeline(transaction=False) as pipe:
            for ago in range(60):
                rate = (2150 + 9 * (59 - ago)) * rng.uniform(0.93, 1.07)
                if ago == 0:
                    rate *= (now.timestamp() % 60) / 60
                counts = {
                    "complete": round(rate),
                    "failed": int(ago in (11, 26, 47)),
                    "retried": rng.choice((0, 0, 1, 2)),
                }
                key = jobstats.minute_key(QUEUE, minute - ago)
                pipe.hset(key, mapping=counts)
                pipe.expire(key, jobstats.KEEP_SECONDS)
            await pipe.execute()

        letters = busy_dead_letters(now, workers)
        for entry in letters:
            await deadletters.record(client, entry, max_count=10_000, max_age_seconds=7 * 86400)
    finally:
        await client.aclose()
    return {
        "queued": sum(WAITING.values()) + WEBHOOKS_WAITING,
        "deferred": WEBHOOKS_DEFERRED,
        "in_progress": sum(RUNNING),
        "workers": workers,
        "dead": [entry["job_id"] for entry in letters],
    }


def test_dashboard_on_a_busy_queue_as_the_docs_show_it(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    services.flush_redis(E2E_REDIS_URL)
    web = stack.start("web")
    admin = f"ops{uuid.uuid4().hex[:6]}"
    register(web, admin)
    make_admin(stack, admin)
    browser.get(f"{web.url}/api/v1/admin/ui")
    sign_in(browser, admin)
    wait = WebDriverWait(browser, WAIT)
    wait.until(ec.visibility_of_element_located((By.ID, "dashboard")))
    # Seeded once the page is up, so that the backlog's age and the beats' are as fresh as they
    # would be on a live queue when the next refresh shows them.
    seeded = asyncio.run(seed_busy_queue())
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-stat="dead"]'), "4"))
    stat = {
        name: browser.find_element(By.CSS_SELECTOR, f'[data-stat="{name}"]').text
        for name in ("queued", "deferred", "in_progress", "workers", "oldest_queued_age_s")
    }
    assert stat == {
        "queued": str(seeded["queued"]),
        "deferred": str(seeded["deferred"]),
        "in_progress": str(seeded["in_progress"]),
        "workers": "3",
        "oldest_queued_age_s": stat["oldest_queued_age_s"],
    }
    assert stat["oldest_queued_age_s"].endswith(" s") and 0 < float(stat["oldest_queued_age_s"][:-2]) < 10
    by_function = browser.find_element(By.ID, "functions").text
    assert all(name in by_function for name in [*WAITING, DELIVER_WEBHOOK])
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-worker]")
    assert [row.get_attribute("data-worker") for row in rows] == seeded["workers"]
    assert all("s ago" in row.text for row in rows) and "+1 more" in rows[2].text
    dead = [
        row.get_attribute("data-dead-letter")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-dead-letter]")
    ]
    assert dead == seeded["dead"]  # newest first
    assert "HTTP 503 (try 8 of 8)" in browser.find_element(By.ID, "dead-letters").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline")) == 2

    # The whole page, dead letters included: the window grown to the page's height.
    page, chrome = browser.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    browser.set_window_size(1366, page + chrome)
    shot = tmp_path / "admin-ui.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "admin-ui.png")
