"""The proxy core's helpers get a narrow context, never the core (docs/design.md section 2).

Every module of ``siplb.proxy`` is read with ``ast``, imports under ``if TYPE_CHECKING:``
included: the graph of imports among them has no cycle, and no helper imports ``core``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import siplb.proxy

PACKAGE = Path(siplb.proxy.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")
HELPERS = ("forwarding", "probe", "keepalive", "registrar", "context", "routing", "stage")


def imports_of(module: str) -> set[str]:
    """The sibling modules ``module`` imports, wherever the import statement is."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level == 1:
                found.add(name.split(".")[0] if name else "")
                if not name:
                    found.update(alias.name for alias in node.names)
            elif name.startswith("siplb.proxy."):
                found.add(name.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[2]
                for alias in node.names
                if alias.name.startswith("siplb.proxy.")
            )
    return found & set(MODULES)


GRAPH = {module: imports_of(module) for module in MODULES}


def test_no_import_cycle_in_the_proxy_package() -> None:
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            cycle = " -> ".join((*path[path.index(module) :], module))
            pytest.fail(f"import cycle: {cycle}")
        if module in done:
            return
        for imported in sorted(GRAPH[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in MODULES:
        visit(module, ())


@pytest.mark.parametrize("module", HELPERS)
def test_helpers_never_import_the_core(module: str) -> None:
    assert "core" not in GRAPH[module]
