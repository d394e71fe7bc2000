"""The job dashboard in headless Chromium against the real `web` process: sign in, read, retry."""

from __future__ import annotations

import asyncio
import os
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
from chat.jobqueue.jobs import change_job_id, persist_job_id
from tests.support.browser import WAIT, console
from tests.support.stack import E2E_REDIS_URL, ROOT, Process, Stack

QUEUE = "arq:queue"
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


def dead_letter(job_id: str, function: str, error: str, failed_at: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "function": function,
        "args": [{"conversation_id": str(uuid.uuid4()), "seq": 7, "body": "hello"}],
        "error": error,
        "reason": "raised",
        "traceback": f'Traceback (most recent call last):\n  File "workers/tasks.py", line 80\n{error}',
        "tries": 3,
        "enqueued_at": (failed_at - timedelta(seconds=4)).isoformat(),
        "failed_at": failed_at.isoformat(),
        "worker_id": "w1",
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


def test_dashboard_signs_in_shows_a_dead_letter_and_retries_it(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
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
    browser.save_screenshot(str(tmp_path / "admin-ui.png"))

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
