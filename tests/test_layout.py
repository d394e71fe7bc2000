"""The test tree's layout rule (CONTRIBUTING.md): no test module imports another test module;
what tests share lives in `tests/support/`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = "tests.support"


def absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` names, a relative one resolved against `package`."""
    base = node.module or ""
    if not node.level:
        return base
    parts = package.split(".")
    parent = parts[: len(parts) - node.level + 1]
    return ".".join([*parent, base] if base else parent)


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, package)
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


# The product's packages, for the fence and the import graph below.
PACKAGES = ("chat", "api", "workers", "push", "devserver")
# The only code that may import arq or name its keys (chat/jobqueue/__init__.py says why).
ARQ_OWNERS = ("chat/jobqueue/", "workers/runtime/")
ARQ_KEYS = ("arq:job:", "arq:in-progress:", "arq:retry:", "arq:result:", "arq:queue")


def product_modules() -> dict[str, Path]:
    """Every module of the product's packages by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def test_only_the_job_queue_and_the_worker_runtime_know_arq() -> None:
    offenders: list[str] = []
    for path in product_modules().values():
        where = path.relative_to(ROOT).as_posix()
        if where.startswith(ARQ_OWNERS):
            continue
        offenders += [f"{where} imports {m}" for m in imported_modules(path) if m.split(".")[0] == "arq"]
        text = path.read_text()
        offenders += [f"{where} names {key!r}" for key in ARQ_KEYS if key in text]
    assert not offenders, "arq belongs in chat/jobqueue/ or workers/runtime/:\n" + "\n".join(offenders)


def import_graph() -> dict[str, set[str]]:
    """Module -> the product's modules it imports, at module level or inside a function alike;
    `from package import name` counts as importing `package.name` when that is a module."""
    modules = product_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = absolute(node, package)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_no_import_cycle_among_the_products_modules() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


# Where the api and the CLI are built from their parts: they make the engine and sessions they hand on.
COMPOSITION_ROOTS = ("api/app.py", "api/deps.py")
DATABASE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "chat.models")


def test_the_api_and_the_cli_reach_the_database_only_through_use_cases() -> None:
    """Resources and CLI commands parse, call a use case (chat/usecases/) and represent: a query
    written in one of them would be a use case that the server API and the CLI cannot share."""
    paths = sorted((ROOT / "api").rglob("*.py"))
    paths.append(ROOT / "chat" / "cli.py")
    offenders = [
        f"{path.relative_to(ROOT).as_posix()} imports {module}"
        for path in paths
        if path.relative_to(ROOT).as_posix() not in COMPOSITION_ROOTS
        for module in imported_modules(path)
        if module.startswith(DATABASE_MODULES)
    ]
    assert not offenders, "reach the database through chat/usecases/:\n" + "\n".join(offenders)
