"""Server keys as an operator makes them for the real processes: `headless-chat server-keys
create`, run against the stack's database, its key read off the last line it prints."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from tests.support.stack import ROOT, Stack


def cli_server_key(stack: Stack, name: str | None = None) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "chat.cli", "server-keys", "create", name or f"e2e-{uuid.uuid4().hex[:8]}"],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]
