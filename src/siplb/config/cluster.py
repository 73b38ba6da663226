"""``[cluster]``: this node's place in a cluster, and the one node id the Via branch carries.

The node id has one source of truth. ``[cluster] node_id`` is used when it is set; a file
written before clusters existed keeps working with ``[proxy] node_id`` alone; both set and
different is a problem. Each node needs its own id, so a cluster without either one is a
problem too (the default ``n1`` would be every node's). The secret file is read here, when the
config is loaded (and so again at each reload).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from siplb.settings import ClusterSettings, ProxySettings

from .files import find_file
from .problems import Loc, Problems
from .schema import NODE_ID, ClusterModel

MIN_SECRET = 32  # characters of the node-to-node secret
_LOC: Loc = ("cluster",)


def build_cluster(
    table: dict[str, Any] | None,
    proxy_table: dict[str, Any],
    problems: Problems,
    base_dir: Path | None,
) -> ClusterSettings | None:
    """``[cluster]``, or None when the file has no such table. ``proxy_table`` is the
    ``[proxy]`` table as written, for its ``node_id``."""
    if table is None:
        return None
    model, broken = problems.validate_partial(ClusterModel, table, _LOC)
    if model is None:
        return None
    node_id = _node_id(model, proxy_table, problems, "node_id" in broken)
    _check_redis(model, broken, problems)
    secret, secret_file = _secret(model, broken, problems, base_dir)
    _check_times(model, broken, problems)
    workers = proxy_table.get("workers", 1)
    if isinstance(workers, int) and workers > 1:
        problems.add(
            ("proxy", "workers"),
            "a [cluster] node runs one worker process for now: scale with more nodes",
        )
    if model.peer is None and "peer" not in broken:
        problems.add((*_LOC, "peer"), "required key is missing: this node's address for the others")
    return ClusterSettings(
        node_id=node_id,
        peer=model.peer or ("", 0),
        secret=secret,
        name=model.name,
        redis=model.redis,
        sentinels=tuple(model.sentinels or ()),
        service=model.service,
        secret_file=secret_file,
        heartbeat=model.heartbeat,
        dead_after=model.dead_after,
        lease_ttl=model.lease_ttl,
    )


def _node_id(
    model: ClusterModel, proxy_table: dict[str, Any], problems: Problems, broken: bool
) -> str:
    proxy_id = proxy_table.get("node_id")
    proxy_ok = isinstance(proxy_id, str) and re.fullmatch(NODE_ID, proxy_id) is not None
    if model.node_id is not None:
        if proxy_ok and proxy_id != model.node_id:
            problems.add(
                (*_LOC, "node_id"),
                f"differs from [proxy] node_id ({proxy_id!r}): set it in one place",
            )
        return model.node_id
    if proxy_ok:
        assert isinstance(proxy_id, str)
        return proxy_id
    if not broken and proxy_id is None:
        problems.add((*_LOC, "node_id"), "required: each node of a cluster needs its own id")
    return ProxySettings().node_id  # the problem is reported; any valid id will do


def _check_redis(model: ClusterModel, broken: frozenset[str], problems: Problems) -> None:
    if broken & {"redis", "sentinels", "service"}:
        return
    if model.redis is not None:
        for key in ("sentinels", "service"):
            if getattr(model, key) is not None:
                problems.add((*_LOC, key), "set redis, or sentinels and service, not both")
        return
    if model.sentinels is None and model.service is None:
        problems.add((*_LOC, "redis"), "required: a redis:// URL, or sentinels and service")
    elif model.sentinels is None:
        problems.add((*_LOC, "sentinels"), "required with service: the Sentinels' addresses")
    elif not model.sentinels:
        problems.add((*_LOC, "sentinels"), "needs at least one Sentinel address")
    elif model.service is None:
        problems.add((*_LOC, "service"), "required with sentinels: the Sentinel service name")


def _secret(
    model: ClusterModel, broken: frozenset[str], problems: Problems, base_dir: Path | None
) -> tuple[bytes, Path | None]:
    """The secret, and the file it was read from (None: written in the config)."""
    if broken & {"secret", "secret_file"}:
        return b"", None
    if model.secret is not None and model.secret_file is not None:
        problems.add((*_LOC, "secret_file"), "set secret or secret_file, not both")
        return b"", None
    if model.secret is not None:
        return _long_enough(model.secret, (*_LOC, "secret"), problems), None
    if model.secret_file is None:
        problems.add((*_LOC, "secret"), "required: secret or secret_file")
        return b"", None
    loc = (*_LOC, "secret_file")
    path = find_file(model.secret_file, loc, problems, base_dir)
    if path is None or not path.is_file():
        return b"", path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add(loc, f"cannot read {str(path)!r}: {exc.strerror}")
        return b"", path
    except UnicodeDecodeError:
        problems.add(loc, f"{str(path)!r} is not UTF-8 text")
        return b"", path
    return _long_enough(text.rstrip("\r\n"), loc, problems), path


def _long_enough(secret: str, loc: Loc, problems: Problems) -> bytes:
    if len(secret) < MIN_SECRET:
        problems.add(loc, f"too short: at least {MIN_SECRET} characters (got {len(secret)})")
    return secret.encode("utf-8")


def _check_times(model: ClusterModel, broken: frozenset[str], problems: Problems) -> None:
    if not broken & {"heartbeat", "dead_after"} and model.dead_after <= model.heartbeat:
        problems.add((*_LOC, "dead_after"), f"must be more than heartbeat ({model.heartbeat:g})")
    problems.check_order(model, broken, _LOC, "dead_after", "lease_ttl")
