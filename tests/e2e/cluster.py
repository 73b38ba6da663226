"""Three ``siplb run`` nodes on 127.0.0.x sharing state through a real Redis.

start_node(workdir, index, destinations, redis=..., secret=...) -> SiplbProcess
Node ``i`` (1-based) listens for SIP on ``127.0.0.(10+i)``, for its peers on the same address,
and serves its admin API on a free loopback port; its id is ``n<i>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .balancer import SiplbProcess, launch, write_config
from .harness import LOOPBACK, free_port

SECRET = "cluster-e2e-secret-0123456789abcdef0123"
HEALTH = "interval = 0.5\ntimeout = 0.4\ndown_after = 2\nup_after = 2\n"


def node_host(index: int) -> str:
    return f"127.0.0.{10 + index}"


def cluster_section(index: int, *, redis: str, peer_port: int, extra: str = "") -> str:
    return (
        f'\n[cluster]\nnode_id = "n{index}"\nredis = "{redis}"\n'
        f'peer = "{node_host(index)}:{peer_port}"\nsecret = "{SECRET}"\n{extra}'
    )


def start_node(
    workdir: Path,
    index: int,
    destinations: Sequence[str],
    *,
    cluster: str,
    max_calls: int | None = None,
    algorithm: str = "round-robin",
    proxy: str = "",
) -> SiplbProcess:
    """Node ``index`` of a cluster (``cluster``: its ``[cluster]`` section)."""
    host = node_host(index)
    port, admin_port = free_port(host), free_port()
    nodedir = workdir / f"n{index}"
    nodedir.mkdir(exist_ok=True)
    config = nodedir / "siplb.toml"
    write_config(
        config,
        port,
        destinations,
        algorithm=algorithm,
        extra=(f"\n[proxy]\n{proxy}\n" if proxy else "") + cluster,
        admin_port=admin_port,
    )
    text = config.read_text().replace(
        f'address = "{LOOPBACK}:{port}"', f'address = "{host}:{port}"'
    )
    text = text.replace("interval = 1.0\ntimeout = 0.5\ndown_after = 2\nup_after = 2\n", HEALTH)
    if max_calls is not None:
        for uri in destinations:
            text = text.replace(f'uri = "{uri}" }}', f'uri = "{uri}", max_calls = {max_calls} }}')
    config.write_text(text)
    return launch(nodedir, config, (host, port), admin_port, timeout=15.0)


def cluster_view(node: SiplbProcess) -> dict[str, Any]:
    status, body = node.api("GET", "/api/cluster")
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def live_nodes(node: SiplbProcess) -> set[str]:
    return {m["node"] for m in cluster_view(node)["members"] if m["alive"]}


def wait_for(what: str, check: Callable[[], bool], *, timeout: float, step: float = 0.02) -> float:
    """Poll ``check`` until it holds; the seconds it took. Fails after ``timeout``."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not true after {timeout} s")
        time.sleep(step)
