"""Via branches that say who owns a transaction (DESIGN.md section 3, step 4).

``z9hG4bK`` (RFC 3261 8.1.1.7) + ``-`` + owner (node id and worker) + ``-`` + kind and a unique
part. Any node or worker can read the owner back from a response's top Via.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from typing import Final

COOKIE: Final = "z9hG4bK"


class BranchMaker:
    def __init__(self, node_id: str, worker: int = 0) -> None:
        self.owner = f"{node_id}.{worker}"
        self.prefix = f"{COOKIE}-{self.owner}-"
        self._prefix_bytes = self.prefix.encode("ascii")
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
    """The owner (``node.worker``) a siplb branch names, or ``None`` for a foreign branch."""
    if not branch.startswith(COOKIE + "-"):
        return None
    parts = branch.split("-", 3)
    return parts[1] if len(parts) >= 3 else None
