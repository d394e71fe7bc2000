from __future__ import annotations

from tests.support import ApiClient
from tests.workers.conftest import RunWorker


async def test_send_is_queued_then_persisted(api: ApiClient, run_worker: RunWorker) -> None:
    alice, bob = await api.user(), await api.user()
    conv = await api.conversation(alice, bob, kind="direct")
    sent = await api.post(f"/conversations/{conv['id']}/messages", alice, json={"body": "hi bob"})
    assert sent.status_code == 202, sent.text
    assert sent.json["status"] == "queued"
    assert sent.json["seq"] == 1
    assert sent.headers["location"] == f"/api/v1/messages/{sent.json['id']}"
    assert (await api.get(f"/messages/{sent.json['id']}", alice)).status_code == 404

    assert await run_worker() == 1

    got = await api.get(f"/messages/{sent.json['id']}", bob)
    assert got.status_code == 200, got.text
    assert got.json["body"] == "hi bob"
    assert got.json["seq"] == 1
    job = await api.get(f"/jobs/{sent.json['job_id']}", alice)
    assert job.status_code == 200, job.text
    assert job.json["status"] == "complete"
