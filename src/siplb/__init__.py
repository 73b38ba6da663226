"""siplb: a SIP load balancer and high-availability toolkit.

The pure packages (``sip``, ``proxy``, ``dispatch``, ``cluster``) may be installed compiled
(mypyc, see ``setup.py``). Their plain Python modules are loaded instead when ``SIPLB_PURE=1``
is set, or when a source file is newer than the compiled modules (a source edited after
``make compile``: the compiled code would not hold the edit).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"

COMPILED_PACKAGES = ("sip", "proxy", "dispatch", "cluster")
_HERE = Path(__file__).resolve().parent


def stale(root: Path = _HERE, packages: Sequence[str] = COMPILED_PACKAGES) -> bool:
    """Some source of ``packages`` under ``root`` is newer than their oldest compiled module
    (or a module has no compiled twin)."""
    sources: list[float] = []
    compiled: list[float] = []
    for package in packages:
        for entry in os.scandir(root / package):
            if entry.name.endswith(".py"):
                sources.append(entry.stat().st_mtime)
            elif entry.name.endswith(".so"):
                compiled.append(entry.stat().st_mtime)
    return bool(compiled) and (len(compiled) < len(sources) or max(sources) > min(compiled))


def _has_compiled(root: Path = _HERE) -> bool:
    return any(p.name.endswith(".so") for p in (root / COMPILED_PACKAGES[0]).iterdir())


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds the pure packages' ``.py`` files ahead of their compiled twins."""

    prefixes = tuple(f"{__name__}.{package}" for package in COMPILED_PACKAGES)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.prefixes) or path is None:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            base = os.path.join(entry, leaf)
            init = os.path.join(base, "__init__.py")
            if os.path.isfile(init):
                return importlib.util.spec_from_file_location(
                    fullname, init, submodule_search_locations=[base]
                )
            if os.path.isfile(base + ".py"):
                return importlib.util.spec_from_file_location(fullname, base + ".py")
        return None


def build_kind() -> str:
    """``"compiled"`` when the parser runs compiled, else ``"pure"``."""
    from siplb.sip import parser

    return "compiled" if str(parser.__file__).endswith(".so") else "pure"


if _has_compiled() and (os.environ.get("SIPLB_PURE") == "1" or stale()):
    if os.environ.get("SIPLB_PURE") != "1":
        print(
            "siplb: sources are newer than the compiled modules; running them as plain Python "
            "(make compile builds them again)",
            file=sys.stderr,
        )
    sys.meta_path.insert(0, _PureFinder())
