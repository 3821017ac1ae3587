"""The core stays pure: no clock, randomness, logging, OS, network, threads or adapters (style anchors c)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pgwarden

PACKAGE = Path(pgwarden.__file__).parent
CORE_FILES = sorted((PACKAGE / "core").glob("*.py"))
FORBIDDEN = {"time", "random", "logging", "os", "socket", "asyncio", "threading", "subprocess", "psycopg",
             "aiohttp", "importlib", "signal", "selectors", "shutil", "pathlib", "secrets", "uuid"}
ALLOWED_PGWARDEN = ("pgwarden.core", "pgwarden.model")
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
    found = []
    for name in imported_modules(tree, module):
        top = name.split(".")[0]
        if top in FORBIDDEN:
            found.append(f"imports {name}")
        elif top == "pgwarden" and not any(name == a or name.startswith(a + ".") for a in ALLOWED_PGWARDEN):
            found.append(f"imports {name} (the core may use only pgwarden.core and pgwarden.model)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS:
            found.append(f"calls {node.func.id}() at line {node.lineno}")
        if isinstance(node, ast.AsyncFunctionDef):
            found.append(f"defines async {node.name}()")
    return found


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    assert not violations(path, f"pgwarden.core.{path.stem}")


def test_model_is_pure_too() -> None:
    """The core imports pgwarden.model, so the model must not smuggle IO in either."""
    assert not violations(PACKAGE / "model.py", "pgwarden.model")


def test_the_checker_catches_offenders(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import time\nfrom os import path\nfrom pgwarden.dcs import base\nfrom . import x\n"
                   "from .model import y\nprint(1)\nasync def f() -> None: ...\n")
    assert sorted(violations(bad, "pgwarden.core.m")) == sorted([
        "imports time", "imports os",
        "imports pgwarden.dcs (the core may use only pgwarden.core and pgwarden.model)",
        "calls print() at line 6", "defines async f()",
    ])
    assert len(CORE_FILES) >= 5
