"""schemathesis over the server API with a live server key (the docs' run holds a user's token,
which every server route refuses): no 500, and every answer is one the document describes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.serverkeys import cli_server_key
from tests.support.stack import Process, Stack

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def web(stack: Stack) -> Iterator[Process]:
    yield stack.start("web")


def test_the_server_api_answers_as_documented_to_anything(web: Process, stack: Stack, tmp_path: Path) -> None:
    # Everything but the erasure: a DELETE would end the users the other calls find.
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            web.url + "/openapi.json",
            "--include-tag",
            "server",
            "--exclude-method",
            "DELETE",
            "--header",
            f"Authorization: Bearer {cli_server_key(stack)}",
            "--checks",
            CHECKS,
            "--max-examples",
            "20",
            "--workers",
            "1",  # as tests/e2e/test_api_docs.py: hypothesis's compiling in two threads can fail
            "--seed",
            "1",
            "--no-color",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary
