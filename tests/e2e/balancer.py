"""The balancer under test: ``siplb run`` as a real process on loopback, stopped by PID.

start_siplb(workdir, destinations, *, transport="udp", algorithm="round-robin",
            extra="", dest_transport=None) -> SiplbProcess
SiplbProcess: .address .pid .config_path .log_lines() -> list[dict] (JSON log)
              .state_changes(uri) -> list[(timestamp, old, new, cause)]
              .stop() -> exit code
"""

from __future__ import annotations

import calendar
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .harness import (
    LOOPBACK,
    Address,
    ManagedProcess,
    StopStep,
    free_port,
    read_tail,
    wait_sip_ready,
)

STOP = (StopStep(15, 8.0), StopStep(9, 2.0))


@dataclass(frozen=True, slots=True)
class StateChange:
    at: float  # epoch seconds
    old: str
    new: str
    cause: str


class SiplbProcess:
    def __init__(self, process: ManagedProcess, address: Address, config_path: Path) -> None:
        self.process = process
        self.address = address
        self.config_path = config_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_lines(self) -> list[dict[str, str]]:
        out = []
        for line in self.process.stderr_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def log_tail(self) -> str:
        return read_tail(self.process.stderr_path, 4000)

    def state_changes(self, uri: str) -> list[StateChange]:
        prefix = f"destination {uri}: "
        changes = []
        for entry in self.log_lines():
            msg = entry.get("msg", "")
            if not msg.startswith(prefix):
                continue
            transition, _, cause = msg[len(prefix) :].partition(" (")
            old, _, new = transition.partition(" -> ")
            changes.append(StateChange(_epoch(entry["ts"]), old, new, cause.rstrip(")")))
        return changes

    def signal(self, signum: int) -> None:
        self.process.signal(signum)

    def stop(self) -> int | None:
        return self.process.stop(STOP)


def _epoch(ts: str) -> float:
    base, _, frac = ts.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + float("0." + (frac or "0"))


def write_config(
    path: Path,
    port: int,
    destinations: Sequence[str],
    *,
    transport: str = "udp",
    algorithm: str = "round-robin",
    extra: str = "",
) -> None:
    dests = ",\n".join(f'  {{ uri = "{uri}" }}' for uri in destinations)
    listeners = f'[[listen]]\ntransport = "{transport}"\naddress = "{LOOPBACK}:{port}"\n'
    if transport != "udp":  # probes and UDP peers still need a UDP side
        listeners += f'\n[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{port}"\n'
    path.write_text(
        f"""{listeners}
[[sets]]
name = "pbx"
algorithm = "{algorithm}"
destinations = [
{dests}
]

[health]
interval = 1.0
timeout = 0.5
down_after = 2
up_after = 2

[log]
format = "json"
level = "info"
{extra}
"""
    )


def start_siplb(
    workdir: Path,
    destinations: Sequence[str],
    *,
    transport: str = "udp",
    algorithm: str = "round-robin",
    extra: str = "",
) -> SiplbProcess:
    port = free_port()
    config = workdir / "siplb.toml"
    write_config(config, port, destinations, transport=transport, algorithm=algorithm, extra=extra)
    process = ManagedProcess(
        "siplb", [sys.executable, "-m", "siplb", "run", "-c", str(config)], cwd=workdir
    )
    address = (LOOPBACK, port)
    try:
        wait_sip_ready(address, timeout=10.0, process=process)
    except Exception:
        process.stop(STOP)
        raise
    return SiplbProcess(process, address, config)
