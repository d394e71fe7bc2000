"""X-Forwarded-For is believed only from TRUSTED_PROXIES, in every process that serves HTTP.

The limits per client address (registrations, logins) key on the address `api/clientaddr.py`
works out. A server that rewrote the peer address from the header before the app saw it (uvicorn
does so for loopback peers by default) would let any local client, or anything behind a local
proxy that passes the header on, pick a fresh bucket for each request.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.support.stack import Stack, dev_server

LIMIT = 3


def register(base: str, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    body = {"username": f"a{uuid.uuid4().hex[:12]}", "password": "correct horse"}
    return httpx.post(f"{base}/api/v1/auth/register", json=body, headers=headers, timeout=10).status_code


def test_without_trusted_proxies_a_forwarded_header_gets_no_bucket_of_its_own(stack: Stack) -> None:
    web = stack.start("web", RATE_LIMIT_REGISTER_PER_ADDRESS=f"{LIMIT}/hour", TRUSTED_PROXIES="")
    try:
        statuses = [register(web.url, f"203.0.113.{i}") for i in range(LIMIT)]
        assert statuses == [201] * LIMIT
        # Whatever the header says, the peer (127.0.0.1) is the client and its bucket is full.
        assert register(web.url, "198.51.100.77") == 429
        assert register(web.url, "127.0.0.2") == 429
        assert register(web.url, None) == 429
    finally:
        web.stop()


def test_behind_a_trusted_proxy_the_header_names_the_client(stack: Stack) -> None:
    web = stack.start("web", RATE_LIMIT_REGISTER_PER_ADDRESS=f"{LIMIT}/hour", TRUSTED_PROXIES="127.0.0.1/32")
    try:
        assert [register(web.url, "203.0.113.50") for _ in range(LIMIT)] == [201] * LIMIT
        assert register(web.url, "203.0.113.50") == 429
        # Another client behind the same proxy has a bucket of its own; a forged hop to the
        # left of the one the proxy appended changes nothing.
        assert register(web.url, "203.0.113.51") == 201
        assert register(web.url, "192.0.2.1, 203.0.113.50") == 429
    finally:
        web.stop()


def test_dev_server_believes_no_forwarded_header_either(tmp_path: Path) -> None:
    with dev_server(tmp_path, {"RATE_LIMIT_REGISTER_PER_ADDRESS": f"{LIMIT}/hour"}) as dev:
        assert [register(dev.api, f"203.0.113.{i}") for i in range(LIMIT)] == [201] * LIMIT
        assert register(dev.api, "198.51.100.77") == 429
