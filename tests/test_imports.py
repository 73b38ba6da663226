"""Imports point down the layers and never form a cycle (docs/design.md section 2).

Every module of ``src/siplb`` is read with ``ast``; each import of another siplb module is an
edge, wherever it is written: at the top, inside a function, under ``if TYPE_CHECKING:`` (a
cycle of type names is still two modules that know each other). ``from .pkg import name`` is an
edge to the submodule ``pkg.name`` when there is one, else to ``pkg``. The test fails naming
every strongly connected component of more than one module, as one cycle through it.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import siplb

SRC = Path(siplb.__file__).parent

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    """``siplb/admin/views.py`` -> ``siplb.admin.views``; a package's ``__init__`` is its name."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, path): path for path in sorted(root.rglob("*.py"))}


def imported(
    tree: ast.Module, name: str, is_package: bool, known: Mapping[str, object]
) -> set[str]:
    """The modules of ``known`` that module ``name`` imports anywhere in ``tree``."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(_closest(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                submodule = f"{base}.{alias.name}" if base else alias.name
                found.add(submodule if submodule in known else _closest(base, known))
    found.discard("")
    found.discard(name)
    return found


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _closest(dotted: str, known: Mapping[str, object]) -> str:
    """``dotted`` itself when it is a known module, else its nearest known ancestor, else ""."""
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted


def import_graph(root: Path) -> Graph:
    found = modules(root)
    return {
        name: imported(
            ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", found
        )
        for name, path in found.items()
    }


def components(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(out)


def cycle_through(graph: Graph, component: list[str]) -> list[str]:
    """One cycle inside ``component``, from its first module back to it (shortest by BFS)."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node] & members):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"no cycle in {component}")  # a component always has one


def describe(graph: Graph) -> Iterator[str]:
    for component in components(graph):
        cycle = " -> ".join(cycle_through(graph, component))
        yield f"{cycle} (component: {', '.join(component)})"


# ---- the detector itself, on small trees ---------------------------------------------------
# (files of a package "pkg": relative path -> source; the cycles it must report)
DETECTOR_CASES = [
    pytest.param({"a.py": "import pkg.b", "b.py": "x = 1"}, [], id="no-cycle"),
    pytest.param(
        {"a.py": "import pkg.b", "b.py": "import pkg.a"}, ["pkg.a -> pkg.b -> pkg.a"], id="import"
    ),
    pytest.param(
        {"a.py": "from .b import x", "b.py": "def f():\n    from . import a"},
        ["pkg.a -> pkg.b -> pkg.a"],
        id="relative-and-in-a-function",
    ),
    pytest.param(
        {
            "a.py": "from pkg.sub import c",
            "sub/__init__.py": "",
            "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import A",
        },
        ["pkg.a -> pkg.sub.c -> pkg.a"],
        id="type-checking-and-submodule",
    ),
    pytest.param(
        {"a.py": "from pkg.sub import name", "sub/__init__.py": "from ..a import x"},
        ["pkg.a -> pkg.sub -> pkg.a"],
        id="name-from-a-package",
    ),
    pytest.param(
        {"a.py": "import pkg.b", "b.py": "import pkg.c", "c.py": "import pkg.a\nimport os"},
        ["pkg.a -> pkg.b -> pkg.c -> pkg.a"],
        id="three",
    ),
]


@pytest.mark.parametrize(("files", "expected"), DETECTOR_CASES)
def test_the_detector_finds_cycles(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    root = tmp_path / "pkg"
    (root / "__init__.py").parent.mkdir()
    (root / "__init__.py").write_text("")
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    graph = import_graph(root)
    assert [" -> ".join(cycle_through(graph, c)) for c in components(graph)] == expected


def test_the_graph_sees_siplb() -> None:
    graph = import_graph(SRC)
    assert "siplb.proxy.core" in graph["siplb.app"]
    assert "siplb.sip.parser" in graph  # every module is a node, imported or not


# ---- siplb ---------------------------------------------------------------------------------
# The admin side reads the balancer through ``siplb.admin.view``, never what builds or runs it.
ADMIN_NEVER_IMPORTS = frozenset(
    {"siplb.app", "siplb.workers", "siplb.view", "siplb.io.driver", "siplb.proxy.core"}
)


def test_admin_reads_a_view() -> None:
    graph = import_graph(SRC)
    reached = {
        (name, target)
        for name, targets in graph.items()
        if name == "siplb.admin" or name.startswith("siplb.admin.")
        for target in targets & ADMIN_NEVER_IMPORTS
    }
    assert reached == set()


def test_no_import_cycle() -> None:
    cycles = list(describe(import_graph(SRC)))
    assert not cycles, "import cycles in src/siplb:\n" + "\n".join(cycles)
