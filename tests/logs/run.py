"""``siplb run`` with logging options, on loopback: its config, its process, its log lines.

start(workdir, *args, destinations=..., extra="", health=FAST, name="edge") -> Run
Run: .process .address .lines() (stderr text) .json() (parsed JSON lines) .stop()
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.balancer import STOP
from e2e.cluster import wait_for
from e2e.harness import LOOPBACK, ManagedProcess, free_port, wait_sip_ready

FAST = "interval = 0.5\ntimeout = 0.4\ndown_after = 1\nup_after = 1\nwithdraw_delay = 0\n"


@dataclass
class Run:
    process: ManagedProcess
    address: tuple[str, int]

    def text(self) -> str:
        return self.process.stderr_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def json(self) -> list[dict[str, object]]:
        """Every stderr line, each of which must be a JSON object."""
        return [json.loads(line) for line in self.lines() if line.strip()]

    def wait_line(self, what: str, match: str, *, timeout: float = 10.0) -> None:
        wait_for(what, lambda: any(match in line for line in self.lines()), timeout=timeout)

    def stop(self) -> int | None:
        return self.process.stop(STOP)


def write_config(
    path: Path,
    port: int,
    destinations: Sequence[str],
    *,
    extra: str = "",
    health: str = FAST,
    name: str = "edge",
) -> None:
    dests = ",\n".join(f'  {{ uri = "{uri}" }}' for uri in destinations)
    path.write_text(
        f'[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{port}"\nname = "{name}"\n\n'
        f'[[sets]]\nname = "pbx"\ndestinations = [\n{dests}\n]\n\n[health]\n{health}\n'
        f"{extra}"
    )


def start(
    workdir: Path,
    *args: str,
    destinations: Sequence[str],
    extra: str = "",
    health: str = FAST,
    port: int | None = None,
    ready: bool = True,
) -> Run:
    """``siplb run -c <config> args...``; with ``ready``, returned once its SIP port answers."""
    port = free_port() if port is None else port
    config = workdir / "siplb.toml"
    write_config(config, port, destinations, extra=extra, health=health)
    argv = [sys.executable, "-m", "siplb", "run", "-c", str(config), *args]
    process = ManagedProcess("siplb", argv, cwd=workdir)
    run = Run(process, (LOOPBACK, port))
    if ready:
        try:
            wait_sip_ready(run.address, timeout=10.0, process=process)
        except Exception:
            run.stop()
            raise
    return run
