"""``config_hash``: what nodes publish so that config skew across a cluster is visible.

The hash covers the settings every node of a cluster should share, as parsed (so comments,
key order and spelling of the same value do not change it): the keys that are each node's own
are left out, or two nodes running the same file would never agree. Left out: ``[[listen]]``,
``[admin]``, ``[log]``, ``[proxy] node_id`` and ``[cluster]`` ``node_id``, ``peer``, ``secret``,
``secret_file`` (a secret never leaves the node, not even hashed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

NODE_OWN: Mapping[str | None, frozenset[str]] = {
    None: frozenset({"listen", "admin", "log"}),
    "proxy": frozenset({"node_id"}),
    "cluster": frozenset({"node_id", "peer", "secret", "secret_file"}),
}
LENGTH = 16  # hex digits shown and compared: 64 bits tell configs apart well enough


def config_hash(raw: Mapping[str, Any]) -> str:
    """A stable hex hash of a parsed TOML document's shared settings."""
    shared = {key: _shared(key, value) for key, value in raw.items() if key not in NODE_OWN[None]}
    shared = {key: value for key, value in shared.items() if value != {}}  # [proxy] = no [proxy]
    text = json.dumps(shared, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:LENGTH]


def _shared(key: str, value: Any) -> Any:
    own = NODE_OWN.get(key)
    if own is None or not isinstance(value, dict):
        return value
    return {name: item for name, item in value.items() if name not in own}
