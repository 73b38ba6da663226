"""The end-to-end fixtures (``e2e_workdir``, ``sipp``) for the wildcard and ICMP tests."""

from e2e.conftest import e2e_workdir, sipp

__all__ = ["e2e_workdir", "sipp"]
