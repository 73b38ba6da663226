"""The compiled build and the pure one: which runs, and when the pure one is chosen instead.

``make test`` runs the whole suite on the compiled build (``SIPLB_BUILD=compiled``) and the pure
packages' tests once more as plain Python (``SIPLB_PURE=1``, ``SIPLB_BUILD=pure``): here each run
checks that it runs what it says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import siplb
from siplb import COMPILED_PACKAGES, build_kind, stale

SRC = Path(siplb.__file__).resolve().parent


def _modules_loaded_from() -> set[str]:
    """The suffix of every loaded module of the compiled packages: ".py" or ".so"."""
    prefixes = tuple(f"siplb.{package}" for package in COMPILED_PACKAGES)
    return {
        Path(str(module.__file__)).suffix
        for name, module in sys.modules.items()
        if name.startswith(prefixes) and getattr(module, "__file__", None)
    }


def test_this_run_is_the_build_it_names() -> None:
    """``SIPLB_BUILD`` (set by make pytest / make pytest-pure) names the build under test; without
    it, whatever runs must at least be one build, never a mix of compiled and plain modules."""
    import siplb.cluster.ownership
    import siplb.dispatch.dispatcher
    import siplb.proxy.core  # noqa: F401

    expected = os.environ.get("SIPLB_BUILD", build_kind())
    assert build_kind() == expected
    assert _modules_loaded_from() == ({".so"} if expected == "compiled" else {".py"})


def test_siplb_pure_loads_the_sources_even_beside_compiled_modules() -> None:
    code = (
        "import siplb, sys, siplb.proxy.core, siplb.cluster.ownership\n"
        "print(siplb.build_kind())\n"
        "print(sorted({m.__file__.rsplit('.', 1)[1] for n, m in sys.modules.items()"
        " if n.startswith(('siplb.sip', 'siplb.proxy', 'siplb.dispatch', 'siplb.cluster'))}))"
    )
    env = {**os.environ, "SIPLB_PURE": "1", "PYTHONPATH": str(SRC.parent)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pure", "['py']"]


def test_version_names_the_build() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "siplb", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"siplb {siplb.__version__} ({build_kind()})"


def _package(root: Path, name: str, files: dict[str, float]) -> None:
    (root / name).mkdir(parents=True)
    for file, age in files.items():
        path = root / name / file
        path.write_text("")
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))


def test_a_source_newer_than_its_compiled_modules_is_stale(tmp_path: Path) -> None:
    _package(tmp_path, "a", {"x.py": 100, "x.so": 50, "y.py": 100, "y.so": 50})
    assert not stale(tmp_path, ["a"])
    os.utime(tmp_path / "a" / "y.py")  # edited after the build
    assert stale(tmp_path, ["a"])


def test_a_source_without_a_compiled_twin_is_stale(tmp_path: Path) -> None:
    _package(tmp_path, "a", {"x.py": 100, "x.so": 50, "new.py": 100})
    assert stale(tmp_path, ["a"])


def test_sources_alone_are_not_stale(tmp_path: Path) -> None:
    _package(tmp_path, "a", {"x.py": 100})
    assert not stale(tmp_path, ["a"])
