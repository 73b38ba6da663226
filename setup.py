"""The compiled build: mypyc turns siplb's pure packages into C extensions at install time.

The packages that hold no I/O (``sip``, ``proxy``, ``dispatch``, ``cluster``) are compiled when
mypyc (part of mypy) can be imported where the package is built and ``SIPLB_PURE=1`` is not set;
otherwise siplb installs as plain Python, which works the same and is tested the same. Compiled
in place for development: ``make compile`` (``python setup.py build_ext --inplace``). Which one
runs: ``siplb --version``; ``SIPLB_PURE=1`` at run time loads the pure modules even where
compiled ones are installed (``siplb/__init__.py``).
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = ("sip", "proxy", "dispatch", "cluster")


def ext_modules() -> list[object]:
    if os.environ.get("SIPLB_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    return list(mypycify([f"src/siplb/{package}" for package in COMPILED], opt_level="3"))


setup(ext_modules=ext_modules())
