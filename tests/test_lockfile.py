"""The lock files (`make lock`): every dependency pyproject.toml names is pinned, within its range,
with the hashes pip checks under --require-hashes, and the image installs the same versions as make."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "requirements.lock"
RUNTIME = ROOT / "requirements-runtime.lock"
STALE = "run `make lock` after changing pyproject.toml's dependencies, and commit the lock files"


@dataclass(frozen=True)
class Pin:
    version: str
    hashes: tuple[str, ...]


def pins(path: Path) -> dict[str, Pin]:
    """The lock's entries by canonical name: a `name==version` line and its `--hash` continuations."""
    text = re.sub(r"\s*\\\n\s*", " ", path.read_text())  # one logical line per requirement
    found: dict[str, Pin] = {}
    for line in text.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?: --hash=\S+)*)", requirement)
        assert match, f"{path.name}: not a hashed `name==version` pin: {requirement!r}"
        name = canonicalize_name(match[1])
        assert name not in found, f"{path.name} pins {name} twice"
        found[name] = Pin(match[2], tuple(match[3].split()))
    return found


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def requirements(*extras: str) -> list[Requirement]:
    """The project's dependencies and those of `extras`, a self-reference (`headless-chat[tracing]`
    inside [dev]) replaced by what that extra names."""
    meta = project()
    optional: dict[str, list[str]] = meta["optional-dependencies"]
    own = canonicalize_name(meta["name"])
    queue = [*meta["dependencies"], *(line for extra in extras for line in optional[extra])]
    expanded = set(extras)
    found: list[Requirement] = []
    while queue:
        requirement = Requirement(queue.pop(0))
        if canonicalize_name(requirement.name) != own:
            found.append(requirement)
            continue
        for extra in sorted(requirement.extras - expanded):
            expanded.add(extra)
            queue += optional[extra]
    return found


def assert_pinned(path: Path, wanted: list[Requirement]) -> None:
    locked = pins(path)
    for requirement in wanted:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{path.name} has no pin for {requirement}: {STALE}"
        pin = locked[name]
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{path.name} pins {name}=={pin.version}, outside pyproject.toml's {requirement}: {STALE}"
        )


def test_every_dependency_and_extra_is_pinned_in_the_lock_within_its_range() -> None:
    wanted = requirements(*project()["optional-dependencies"])
    assert {"falcon", "pytest", "opentelemetry-sdk"} <= {canonicalize_name(r.name) for r in wanted}
    assert_pinned(FULL, wanted)


def test_the_runtime_lock_pins_the_runtime_set_and_tracing_at_the_full_locks_versions() -> None:
    assert_pinned(RUNTIME, requirements("tracing"))
    full, runtime = pins(FULL), pins(RUNTIME)
    assert runtime.keys() <= full.keys()
    assert {name: pin.version for name, pin in runtime.items()} == {
        name: full[name].version for name in runtime
    }, "the image would run other versions than make's .venv: " + STALE
    assert not {"pytest", "mypy", "ruff"} & runtime.keys()  # the image carries no test tooling


def test_every_pin_carries_sha256_hashes_so_pip_can_require_them() -> None:
    for path in (FULL, RUNTIME):
        for name, pin in pins(path).items():
            assert pin.hashes, f"{path.name}: {name} has no hash"
            assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in pin.hashes), name


def test_make_and_the_image_install_from_the_locks_checking_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements.lock" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile  # the project itself resolves nothing
    assert re.search(r"^\$\(READY\): .*requirements\.lock", makefile, re.MULTILINE)  # a new lock rebuilds
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements-runtime.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
