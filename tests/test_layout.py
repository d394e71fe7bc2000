"""The test tree's layout rule (CONTRIBUTING.md): no test module imports another test module;
what tests share lives in `tests/support/`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = "tests.support"


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # `from tests.e2e import test_push` names a module too, not only a package.
            names = [f"{base}.{alias.name}" for alias in node.names]
            found.append(base if crosses(base) else next((n for n in names if crosses(n)), base))
    return found


def crosses(module: str) -> bool:
    """A module of the test tree other than the shared helpers (`tests` itself is a package)."""
    return module.startswith("tests.") and not (module == SHARED or module.startswith(SHARED + "."))


def test_no_test_module_imports_another() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for folder in ("tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for module in imported_modules(path)
        if crosses(module)
    ]
    assert not offenders, "move what they share into tests/support/:\n" + "\n".join(offenders)
