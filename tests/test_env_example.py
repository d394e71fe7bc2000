"""`.env.example` lists every setting with its real default, and the README's table agrees with it."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from chat.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# Read by the entry points themselves (push, workers, devserver), not by chat/settings.py.
PROCESS_VARIABLES = {"PORT", "HOST", "LOG_LEVEL", "API_PORT", "PUSH_PORT"}


def example() -> list[str]:
    return (ROOT / ".env.example").read_text().splitlines()


def documented() -> dict[str, str]:
    """NAME -> default, from the `# NAME=default` lines."""
    found = (re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.*)", line) for line in example())
    return {m[1]: m[2] for m in found if m}


def default(name: str) -> str:
    value = Settings.model_fields[name.lower()].default
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return "" if value is None else str(value)


def same(written: str, actual: str) -> bool:
    try:
        return float(written) == float(actual)
    except ValueError:
        return written == actual


def test_every_setting_is_listed_with_its_default() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    listed = documented()
    assert sorted(settings - listed.keys()) == [], "add these settings to .env.example"
    assert sorted(listed.keys() - settings - PROCESS_VARIABLES) == [], "no setting has these names"
    wrong = {n: (listed[n], default(n)) for n in settings if not same(listed[n], default(n))}
    assert wrong == {}, "(.env.example says, the default is)"


def test_every_setting_says_what_it_means() -> None:
    lines = example()
    for i, line in enumerate(lines):
        if re.fullmatch(r"# [A-Z][A-Z0-9_]*=.*", line):
            above = lines[i - 1]
            assert above.startswith("# ") and len(above) > 12, f"no meaning above {line!r}"


def test_the_readme_table_agrees() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Configuration", 1)[1].split("\n### ", 1)[0]
    listed = documented()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 10
    for row in rows:
        cells = re.split(r"(?<!\\)\|", row)
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[1])
        defaults = re.findall(r"`([^`]*)`", cells[2])
        assert names and all(n in listed for n in names), row
        if defaults:  # "`10` / `5`": one per name
            assert len(defaults) == len(names), row
            assert all(same(d, listed[n]) for n, d in zip(names, defaults, strict=True)), row
        else:  # "empty", "random per process in dev"
            assert all(listed[n] == "" for n in names), row
