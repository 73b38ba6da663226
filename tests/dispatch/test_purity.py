"""``siplb.dispatch`` is pure (DESIGN.md section 2): no I/O, clock, logging or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import siplb.dispatch

PACKAGE = Path(siplb.dispatch.__file__).parent
FILES = sorted(PACKAGE.glob("*.py"))
FORBIDDEN = {
    "asyncio",
    "datetime",
    "logging",
    "os",
    "random",  # take a random.Random instance instead (type-checking import only)
    "selectors",
    "socket",
    "ssl",
    "threading",
    "time",
}


def runtime_imports(tree: ast.Module) -> list[str]:
    """Top-level module names imported outside ``if TYPE_CHECKING:`` blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) in {
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        }:
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_files_found() -> None:
    assert {f.name for f in FILES} >= {"health.py", "accounting.py", "algorithms.py", "dset.py"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_forbidden_import(path: Path) -> None:
    imported = set(runtime_imports(ast.parse(path.read_text(), str(path))))
    assert not imported & FORBIDDEN


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_builtin_hash(path: Path) -> None:
    """``hash()`` changes between runs (PYTHONHASHSEED): hashing must use a stable function."""
    calls = [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hash"
    ]
    assert calls == []


def test_detector_sees_imports() -> None:
    tree = ast.parse(
        "import time\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import random\nelse:\n    import socket\n"
        "def f():\n    import logging\n"
    )
    assert runtime_imports(tree) == ["time", "typing", "socket", "logging"]
