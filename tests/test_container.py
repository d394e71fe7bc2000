"""The image and the compose file, read as Docker would (no Docker engine is needed to check them)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from tests.support.compose import compose

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "headless-chat:local"


def procfile_names() -> set[str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {line.split(":", 1)[0] for line in lines if line.strip() and not line.startswith("#")}


def dockerfile() -> list[str]:
    return [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line and line[0] != "#"]


def test_compose_runs_the_procfile_lines_from_one_image() -> None:
    defined = compose()["services"]
    apps = {name: s for name, s in defined.items() if s.get("image") == IMAGE}
    assert set(apps) == procfile_names()  # a service per Procfile line, each named after it
    for name, service in apps.items():
        assert service["command"] == ["bin/procfile-run", name]
    assert [name for name, s in apps.items() if "build" in s] == ["release"]  # built once
    assert "ports" not in apps["worker"]  # --scale worker=N needs no host port per worker
    assert apps["release"]["restart"] == "no"
    assert {apps[n]["restart"] for n in ("web", "worker", "push")} == {"unless-stopped"}
    assert all("healthcheck" in apps[name] for name in ("web", "worker", "push"))
    for name in ("postgres", "redis"):
        # TCP, not the Unix socket that Postgres's first-run init server answers on.
        assert "127.0.0.1" in defined[name]["healthcheck"]["test"]
    # Nothing is demanded of the shell, so `docker compose down` works without any secret.
    assert "${" not in (ROOT / "docker-compose.yml").read_text()
    assert all(s["env_file"] == [{"path": ".env", "required": False}] for s in apps.values())


def test_the_image_holds_what_every_procfile_line_needs() -> None:
    lines = dockerfile()
    copied = {src for line in lines if line.startswith("COPY ") for src in line.split()[1:-1]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    needed = set(packages["wheel"]["packages"]) | {"alembic", "alembic.ini", "Procfile", "bin", "README.md"}
    assert needed <= copied, needed - copied
    assert all((ROOT / path).exists() for path in copied)
    user = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert 'CMD ["bin/procfile-run", "web"]' in lines
    assert "EXPOSE 8000" in lines and any("PYTHONDONTWRITEBYTECODE=1" in line for line in lines)
    # The dependencies are installed before the code is copied, so a code change keeps that layer.
    first_code = min(i for i, line in enumerate(lines) if re.match(r"COPY (chat|api|workers|push)\b", line))
    assert any(re.search(r"pip install .*-r ", line) for line in lines[:first_code])


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simply put: a pattern matches the path or a folder above it; `**/` at any depth."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):
            tails = ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)]
            if any(fnmatch.fnmatch(tail, pattern[3:]) for tail in tails):
                return True
        elif any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            return True
    return False


def test_the_build_context_leaves_out_the_virtualenv_the_dev_database_and_secrets() -> None:
    patterns = [p for p in (ROOT / ".dockerignore").read_text().splitlines() if p and p[0] != "#"]
    left_out = [".venv/bin/python", ".env", "headless-chat.db", "headless-chat.db-wal", ".git/HEAD"]
    for path in [*left_out, "chat/__pycache__/settings.cpython-311.pyc"]:
        assert ignored(path, patterns), path
    kept = ["chat/settings.py", "Procfile", "bin/procfile-run", ".env.example", "alembic.ini", "LICENSE"]
    for path in kept:
        assert not ignored(path, patterns), path
