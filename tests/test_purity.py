"""The pure cores stay pure (docs/design.md section 2): no asyncio, socket, clock reads or logging.

Every module of ``siplb.sip``, ``siplb.proxy``, ``siplb.dispatch``, ``siplb.cluster``, ``siplb.bond``
and ``siplb.capture`` is read with ``ast``; an import of a forbidden module anywhere in it (inside
functions too) fails, except under ``if TYPE_CHECKING:``. Pure code may import other pure
packages of siplb, never the shells. Packages whose hashes decide something every process must
agree on never call ``hash()``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import siplb

SRC = Path(siplb.__file__).parent
PURE = ("sip", "proxy", "dispatch", "cluster", "bond", "capture", "media")
FORBIDDEN = frozenset(
    {
        "asyncio",
        "datetime",
        "logging",
        "multiprocessing",
        "select",
        "selectors",
        "socket",
        "ssl",
        "subprocess",
        "threading",
        "time",
    }
)
# Stricter rules for single packages: dispatch takes its random.Random from the caller; cluster
# takes its boot ids and nonces from the shell.
EXTRA = {
    "dispatch": frozenset({"os", "random"}),
    "cluster": frozenset({"os", "random"}),
    "bond": frozenset({"os", "random", "secrets"}),  # numbers and keys come from the shell
}
# ``hash()`` changes between runs (PYTHONHASHSEED): where processes must agree on a hash
# (rendezvous, weighted choices), only a stable function will do.
STABLE_HASH = ("dispatch", "cluster")
SHELLS = frozenset({"siplb.io", "siplb.admin", "siplb.app", "siplb.cli"})
FILES = sorted((package, path) for package in PURE for path in (SRC / package).rglob("*.py"))


def runtime_imports(tree: ast.Module, package: str = "") -> list[str]:
    """Absolute names of modules imported outside ``if TYPE_CHECKING:`` blocks.

    ``package`` (``siplb.proxy``) resolves relative imports.
    """
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
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append(node.module or "")
            else:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                found.append(f"{base}.{node.module}" if node.module else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imports_of(package: str, path: Path) -> list[str]:
    return runtime_imports(ast.parse(path.read_text(), str(path)), f"siplb.{package}")


def test_every_pure_package_is_found() -> None:
    names = {(package, path.name) for package, path in FILES}
    assert {
        ("sip", "parser.py"),
        ("proxy", "core.py"),
        ("dispatch", "health.py"),
        ("cluster", "ownership.py"),
        ("bond", "peer.py"),
    } <= names


@pytest.mark.parametrize(
    ("package", "path"), FILES, ids=[f"{pkg}/{path.name}" for pkg, path in FILES]
)
def test_no_forbidden_import(package: str, path: Path) -> None:
    top_level = {name.split(".")[0] for name in imports_of(package, path)}
    assert not top_level & (FORBIDDEN | EXTRA.get(package, frozenset()))


@pytest.mark.parametrize(
    ("package", "path"), FILES, ids=[f"{pkg}/{path.name}" for pkg, path in FILES]
)
def test_no_import_of_a_shell(package: str, path: Path) -> None:
    imported = imports_of(package, path)
    assert [name for name in imported if any(name.startswith(s) for s in SHELLS)] == []


HASHED = [(package, path) for package, path in FILES if package in STABLE_HASH]


@pytest.mark.parametrize(
    ("package", "path"), HASHED, ids=[f"{pkg}/{path.name}" for pkg, path in HASHED]
)
def test_no_builtin_hash(package: str, path: Path) -> None:
    calls = [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hash"
    ]
    assert calls == []


# (source, package it sits in, what the detector must report)
DETECTOR_CASES = [
    ("import time", "siplb.sip", ["time"]),
    ("import os.path", "siplb.sip", ["os.path"]),
    ("from socket import socket", "siplb.sip", ["socket"]),
    ("def f():\n    import logging", "siplb.sip", ["logging"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random", "x", ["typing"]),
    ("if TYPE_CHECKING:\n    import random\nelse:\n    import select", "x", ["select"]),
    ("from . import core", "siplb.proxy", ["siplb.proxy"]),
    ("from .core import Proxy", "siplb.proxy", ["siplb.proxy.core"]),
    ("from ..io import udp", "siplb.proxy", ["siplb.io"]),
]


@pytest.mark.parametrize(("source", "package", "expected"), DETECTOR_CASES)
def test_the_detector_sees_imports(source: str, package: str, expected: list[str]) -> None:
    assert runtime_imports(ast.parse(source), package) == expected


# Importing a pure package, with everything it imports, must not load these either.
TRANSITIVE = ("asyncio", "socket", "logging", "selectors", "ssl")
TRANSITIVE_CASES = [
    pytest.param("siplb.sip", id="sip"),
    pytest.param("siplb.dispatch", id="dispatch"),
    pytest.param("siplb.proxy.core", id="proxy"),
    pytest.param("siplb.cluster", id="cluster"),
    pytest.param("siplb.bond", id="bond"),
    pytest.param("siplb.capture", id="capture"),
    pytest.param("siplb.media", id="media"),
]


@pytest.mark.parametrize("module", TRANSITIVE_CASES)
def test_importing_a_pure_package_loads_no_shell_module(module: str) -> None:
    code = (
        "import sys\n"
        f"import {module}\n"
        f"print(' '.join(m for m in {TRANSITIVE!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.split() == []
