"""The end-to-end fixtures (``e2e_workdir``, ``sipp``) for the capture's test with sngrep."""

from e2e.conftest import e2e_workdir, sipp

__all__ = ["e2e_workdir", "sipp"]
