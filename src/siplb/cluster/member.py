"""A cluster member: one balancer process, worker ``worker`` of node ``node``."""

from __future__ import annotations

from dataclasses import dataclass

MAX_WORKER_DIGITS = 5


@dataclass(frozen=True, slots=True, order=True)
class Member:
    """One balancer process: worker ``worker`` of node ``node``."""

    node: str
    worker: int = 0

    @property
    def tag(self) -> str:
        """``node.worker``, as a siplb Via branch carries it."""
        return f"{self.node}.{self.worker}"


def parse_tag(tag: str) -> Member | None:
    """The member a ``node.worker`` tag names, or ``None`` when it is not one."""
    node, dot, worker = tag.rpartition(".")
    if (
        not dot
        or not node
        or "-" in node
        or not worker.isascii()
        or not worker.isdigit()
        or len(worker) > MAX_WORKER_DIGITS
    ):
        return None
    return Member(node, int(worker))
