"""A deleted message's file on local disk, through the sweep a worker runs: its bytes go only
once the upload URL has expired, so that URL can never write them back."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.deps import Deps
from chat.infra import storage
from chat.settings import Settings
from tests.support import ApiClient, assert_problem
from tests.support.clock import Clock
from tests.support.settings import RunWorker
from tests.support.uploads import get_signed, put_signed
from workers import sweeper

DATA = b"swept bytes \x00\xff" * 100
URL_SECONDS = 60  # the clock below moves past it: the steps before the expiry never race it


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "upload_url_expire_seconds": URL_SECONDS,
            "upload_sweep_seconds": 0.001,  # every sweep_once below sweeps
            "uploads_dir": str(tmp_path / "uploads"),
        }
    )


async def test_a_deleted_messages_file_goes_once_its_upload_url_has_expired(
    api: ApiClient, deps: Deps, run_worker: RunWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweeper, "CLOCK_SKEW_SECONDS", 0)
    # The clocks that decide the URL's expiry: the signed URL's check and the sweep's.
    clock = Clock(monkeypatch)
    clock.patch_time(storage)
    clock.patch_datetime(sweeper)
    alice, bob, cid = await api.pair()
    body = {"filename": "a.bin", "content_type": "application/octet-stream", "size": len(DATA)}
    ticket = (await api.post("/uploads", alice, json=body)).json
    assert (await put_signed(api, ticket["upload_url"], DATA, ticket["headers"])).status_code == 204
    sent = await api.post(
        f"/conversations/{cid}/messages", alice, json={"body": "x", "attachments": [ticket["id"]]}
    )
    await run_worker()
    [attachment] = (await api.get(f"/messages/{sent.json['id']}", bob)).json["attachments"]
    assert (await api.delete(f"/messages/{sent.json['id']}", alice)).status_code == 202
    await run_worker()

    # While the upload URL is valid the bytes stay, so that URL still cannot replace them.
    assert await sweeper.sweep_once(deps.redis, deps.sessions, deps.storage, deps.settings) == 0
    assert_problem(await put_signed(api, ticket["upload_url"], b"x" * len(DATA), ticket["headers"]), 409)

    clock.advance(URL_SECONDS + 1.1)
    assert await sweeper.sweep_once(deps.redis, deps.sessions, deps.storage, deps.settings) == 1
    assert not any(Path(deps.settings.uploads_dir).glob(f"*{ticket['id']}*"))
    assert_problem(await get_signed(api, attachment["url"]), 404)
    assert_problem(await put_signed(api, ticket["upload_url"], b"x" * len(DATA), ticket["headers"]), 403)
    assert not any(Path(deps.settings.uploads_dir).glob(f"*{ticket['id']}*"))
