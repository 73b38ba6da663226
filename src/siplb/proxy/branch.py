"""Via branches that say who owns a transaction (docs/design.md section 3, step 5).

The format and its parser live in ``siplb.cluster.branch``: ``z9hG4bK`` (RFC 3261 8.1.1.7) +
``-`` + owner tag (``node.worker``) + ``-`` + kind and a unique part. ``BranchMaker`` makes the
branches of one member; any node or worker reads the owner back from a response's top Via.
"""

from __future__ import annotations

import hashlib
import itertools
import os

from siplb.cluster import branch as cluster_branch
from siplb.cluster.branch import COOKIE
from siplb.cluster.member import Member

__all__ = ["COOKIE", "BranchMaker", "owner_of"]


class BranchMaker:
    def __init__(self, node_id: str, worker: int = 0) -> None:
        self.member = Member(node_id, worker)
        self.owner = self.member.tag
        self.prefix = cluster_branch.prefix(self.member)
        # a per-process random part, so branches stay unique across restarts
        self._salt = os.urandom(4).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        """A fresh branch for a client transaction."""
        return f"{self.prefix}{self._salt}{next(self._counter):x}"

    def probe(self) -> str:
        return f"{self.prefix}p{self._salt}{next(self._counter):x}"

    def keepalive(self) -> str:
        """A branch for a NAT keepalive OPTIONS to a registered phone."""
        return f"{self.prefix}k{self._salt}{next(self._counter):x}"

    def stateless(self, seed: bytes) -> str:
        """A branch derived from the incoming request (16.11), the same for its retransmissions."""
        return f"{self.prefix}s{hashlib.blake2b(seed, digest_size=8).hexdigest()}"

    def is_ours(self, branch: str | None) -> bool:
        return branch is not None and branch.startswith(self.prefix)

    def is_probe(self, branch: str) -> bool:
        return branch.startswith("p", len(self.prefix))


def owner_of(branch: str) -> str | None:
    """The owner tag (``node.worker``) a siplb branch names, or ``None`` for a foreign branch."""
    member = cluster_branch.owner_of(branch)
    return None if member is None else member.tag
