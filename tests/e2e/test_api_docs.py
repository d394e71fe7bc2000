"""/docs and /redoc in headless Chromium with no network, and schemathesis over /openapi.json."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import WAIT, console
from tests.support.stack import ROOT, Process, Stack


@pytest.fixture(scope="module")
def web(stack: Stack) -> Iterator[Process]:
    process = stack.start("web")
    stack.start("worker")
    yield process


def operations(web: Process) -> list[tuple[str, str, str]]:
    document = httpx.get(web.url + "/openapi.json").json()
    return [
        (method.upper(), path, op["operationId"])
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    ]


def no_outside_requests(browser: WebDriver) -> None:
    for entry in console(browser):
        message = entry["message"]
        # The one thing ReDoc reaches for outside is its vendor's logo, which the page's
        # Content-Security-Policy refuses before anything leaves the machine.
        if "cdn.redoc.ly" in message and "Content Security Policy" in message:
            continue
        assert entry["level"] != "SEVERE", message


def listing(
    web: Process, browser: WebDriver, page: str, selector: str, *, more: int = 0
) -> tuple[list[tuple[str, str, str]], list[WebElement]]:
    """Every operation, and the page's elements that match `selector` once there is one per
    operation (and `more`, for what else the page lists alike)."""
    expected = operations(web)
    browser.get(web.url + page)
    WebDriverWait(browser, WAIT).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, selector)) == len(expected) + more
    )
    return expected, browser.find_elements(By.CSS_SELECTOR, selector)


def test_swagger_ui_lists_every_operation_offline(web: Process, browser: WebDriver) -> None:
    # Swagger UI lists the webhook delivery (OpenAPI 3.1 `webhooks`) as one more block.
    webhooks = len(httpx.get(web.url + "/openapi.json").json()["webhooks"])
    expected, blocks = listing(web, browser, "/docs", ".opblock", more=webhooks)
    shown = {
        (block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text, block.get_attribute("id"))
        for block in blocks
    }
    for method, _, operation_id in expected:
        assert any(m == method and operation_id in (i or "") for m, i in shown), (method, operation_id)
    assert browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper") == []  # Swagger UI's parse errors
    no_outside_requests(browser)


def test_redoc_lists_every_operation_offline(web: Process, browser: WebDriver) -> None:
    expected, elements = listing(web, browser, "/redoc", "[data-section-id^='operation/']")
    sections = {element.get_attribute("data-section-id") for element in elements}
    assert sections == {f"operation/{operation_id}" for _, _, operation_id in expected}
    no_outside_requests(browser)


def test_schemathesis_finds_no_server_error_and_no_response_off_the_spec(
    web: Process, stack: Stack, tmp_path: Path
) -> None:
    body = {"username": "schemathesis", "password": "schemathesis-pass"}
    assert httpx.post(web.url + "/api/v1/auth/register", json=body).status_code == 201
    admin = subprocess.run(
        [sys.executable, "-m", "chat.cli", "make-admin", "schemathesis"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert admin.returncode == 0, admin.stderr
    token = httpx.post(web.url + "/api/v1/auth/login", json=body).json()["access_token"]
    # Every check but "schema-valid requests are accepted": the api also refuses what no schema
    # can say (unknown user ids, before together with after, cursors it did not issue), with a
    # documented 422.
    checks = ",".join(
        (
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_headers_conformance",
            "response_schema_conformance",
            "negative_data_rejection",
        )
    )
    # A body over the api's size limit is refused with 413 before any field is read: as much a
    # rejection of invalid data as a 422, though not among schemathesis's defaults.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[checks.negative_data_rejection]\n"
        "expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]\n"
    )
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            web.url + "/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            checks,
            "--max-examples",
            "25",
            # One thread: CPython 3.11 can fail hypothesis's compiling in two at once ("SystemError:
            # AST constructor recursion depth mismatch"), which failed this test once for nothing.
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
            "--request-timeout",
            "10",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    summary = run.stdout[-6000:]
    print(summary)
    assert run.returncode == 0, summary
