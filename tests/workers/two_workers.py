"""A real ``siplb run`` with ``workers = 2`` for the end-to-end worker tests, and datagrams a
chosen worker owns (by the workers' own rule)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from e2e.balancer import SiplbProcess, launch
from e2e.harness import LOOPBACK, free_port
from siplb.cluster import Member, Ownership

NODE = "n1"
MEMBERS = [Member(NODE, 0), Member(NODE, 1)]

CONFIG = """
[[listen]]
transport = "udp"
address = "{host}:{port}"
{listen}
[[sets]]
name = "pbx"
algorithm = "round-robin"
destinations = [{destinations}]

[proxy]
workers = 2
node_id = "{node}"

[health]
interval = 1.0
timeout = 0.5

[log]
format = "json"
level = "info"

[admin]
listen = "{host}:{admin}"
token = "e2e-admin-token"
{extra}
"""


def start_two_workers(
    workdir: Path, destinations: Sequence[str], *, listen: str = "", extra: str = ""
) -> SiplbProcess:
    """``siplb run`` with two workers before ``destinations`` (SIP URIs); ``listen``: more keys
    of the UDP listener, ``extra``: more sections."""
    port, admin = free_port(), free_port()
    path = workdir / "siplb.toml"
    path.write_text(
        CONFIG.format(
            host=LOOPBACK,
            port=port,
            listen=listen,
            destinations=", ".join(f'{{ uri = "{uri}" }}' for uri in destinations),
            node=NODE,
            admin=admin,
            extra=extra,
        )
    )
    return launch(workdir, path, (LOOPBACK, port), admin, timeout=15.0)


def stop_cleanly(lb: SiplbProcess) -> None:
    code = lb.stop()
    assert code == 0, f"siplb exited with {code} on SIGTERM\n{lb.log_tail()}"


def owned_by(worker: int, make: Callable[[int], bytes]) -> Iterator[bytes]:
    """Datagrams ``make(n)`` for n = 0, 1, ... that ``worker`` owns (the workers' own rule)."""
    ownership = Ownership(MEMBERS[0], MEMBERS)
    for n in itertools.count():
        data = make(n)
        if ownership.owner(data) == MEMBERS[worker]:
            yield data
