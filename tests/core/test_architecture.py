"""The core and the engine stay pure: no clock, randomness, logging, OS, network, threads or adapters (style
anchors c). `lint-imports` checks the same imports, indirect ones too ([tool.importlinter] in pyproject.toml);
this test also catches IO builtins and async functions, which an import graph cannot see."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

import pgwarden

PACKAGE = Path(pgwarden.__file__).parent
CORE_FILES = sorted((PACKAGE / "core").rglob("*.py"))
ENGINE_FILES = sorted((PACKAGE / "engine").rglob("*.py"))
FORBIDDEN = {"time", "random", "logging", "os", "socket", "asyncio", "threading", "subprocess", "psycopg",
             "aiohttp", "importlib", "signal", "selectors", "shutil", "pathlib", "secrets", "uuid"}
ALLOWED_PGWARDEN = {
    "pgwarden.core": ("pgwarden.core", "pgwarden.model"),
    "pgwarden.engine": ("pgwarden.engine", "pgwarden.core", "pgwarden.model"),
    "pgwarden.model": ("pgwarden.model",),
}
IO_BUILTINS = {"open", "print", "input", "exec", "eval", "__import__", "breakpoint"}


def imported_modules(tree: ast.AST, module: str) -> list[str]:
    """Absolute names of every module imported anywhere in the file (relative imports resolved)."""
    package = module.rsplit(".", 1)[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                names.append(node.module or "")
    return names


def violations(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    layer = ".".join(module.split(".")[:2])
    allowed = ALLOWED_PGWARDEN[layer]
    found = []
    for name in imported_modules(tree, module):
        top = name.split(".")[0]
        if top in FORBIDDEN:
            found.append(f"imports {name}")
        elif top == "pgwarden" and not any(name == a or name.startswith(a + ".") for a in allowed):
            found.append(f"imports {name} ({layer} may use only {', '.join(allowed)})")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS:
            found.append(f"calls {node.func.id}() at line {node.lineno}")
        if isinstance(node, ast.AsyncFunctionDef):  # the agent drives the engine's generators, not it
            found.append(f"defines async {node.name}()")
    return found


def module_name(path: Path) -> str:
    """pgwarden.core.sync.plan for core/sync/plan.py (pgwarden.core.sync.__init__: relative imports resolve
    against the package)."""
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(PACKAGE / "core")))
def test_core_module_is_pure(path: Path) -> None:
    assert not violations(path, module_name(path))


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(PACKAGE / "engine")))
def test_engine_module_is_pure(path: Path) -> None:
    """The executor's steps only yield effects: the agent and the simulator do their IO."""
    assert not violations(path, module_name(path))


def test_model_is_pure_too() -> None:
    """The core imports pgwarden.model, so the model must not smuggle IO in either."""
    assert not violations(PACKAGE / "model.py", "pgwarden.model")


def test_the_checker_catches_offenders(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import time\nfrom os import path\nfrom pgwarden.dcs import base\nfrom . import x\n"
                   "from .model import y\nprint(1)\nasync def f() -> None: ...\n")
    assert sorted(violations(bad, "pgwarden.core.m")) == sorted([
        "imports time", "imports os",
        "imports pgwarden.dcs (pgwarden.core may use only pgwarden.core, pgwarden.model)",
        "calls print() at line 6", "defines async f()",
    ])
    assert sorted(violations(bad, "pgwarden.engine.m")) == sorted([
        "imports time", "imports os",
        "imports pgwarden.dcs (pgwarden.engine may use only pgwarden.engine, pgwarden.core, pgwarden.model)",
        "calls print() at line 6", "defines async f()",
    ])
    assert len(CORE_FILES) >= 5 and len(ENGINE_FILES) >= 3


def test_import_linter_forbids_the_same_modules() -> None:
    """The `lint-imports` contract and this test name the same outside modules, for the same packages."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    (no_io,) = [c for c in contracts if c["type"] == "forbidden" and "pgwarden.core" in c["source_modules"]]
    assert set(no_io["source_modules"]) == set(ALLOWED_PGWARDEN)
    assert {m for m in no_io["forbidden_modules"] if not m.startswith("pgwarden.")} == FORBIDDEN
