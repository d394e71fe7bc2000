from __future__ import annotations

import pytest
from pydantic import ValidationError

from chat.settings import Settings


def test_production_refuses_a_missing_or_short_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET_KEY", "ENVIRONMENT", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(redis_url="redis://localhost:6379/0")
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(secret_key="too-short", redis_url="redis://localhost:6379/0")
    with pytest.raises(ValidationError, match="REDIS_URL"):
        Settings(secret_key="k" * 40)
    ok = Settings(secret_key="k" * 40, redis_url="redis://localhost:6379/0")
    assert ok.environment == "production"


def test_dev_and_test_fall_back_to_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")
    monkeypatch.setenv("ENVIRONMENT", "dev")
    dev = Settings()
    assert dev.database_url.startswith("sqlite+aiosqlite://") and dev.redis_url == "memory://"
    assert len(dev.secret_key.get_secret_value()) >= 32


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("ACCESS_TOKEN_EXPIRE_MINUTES", "5")
    monkeypatch.setenv("ALGORITHM", "HS384")
    settings = Settings()
    assert settings.access_token_expire_minutes == 5 and settings.algorithm == "HS384"
    monkeypatch.setenv("ALGORITHM", "none")
    with pytest.raises(ValidationError):
        Settings()


def test_an_upload_cannot_expire_unsent_before_its_url_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "test")
    for url_seconds in (3600, 600):
        with pytest.raises(ValidationError, match="UPLOAD_UNSENT_TTL_SECONDS"):
            Settings(upload_url_expire_seconds=url_seconds, upload_unsent_ttl_seconds=600)
    assert (
        Settings(upload_url_expire_seconds=599, upload_unsent_ttl_seconds=600).upload_unsent_ttl_seconds
        == 600
    )


@pytest.mark.parametrize("process", ["api", "push", "workers"])
def test_a_process_started_without_a_setting_says_which_in_one_line(process: str) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {"PATH": os.environ["PATH"], "ENVIRONMENT": "production", "REDIS_URL": "redis://127.0.0.1:9/0"}
    done = subprocess.run(
        [sys.executable, "-m", process], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("headless-chat: ") and "SECRET_KEY" in lines[0]
