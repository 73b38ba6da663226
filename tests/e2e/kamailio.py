"""Kamailio as the reference proxy of the end-to-end tests (API: see ``sipp.py``).

Runs ``bench/kamailio/dispatcher.cfg``: a record-routing stateful proxy that sends
new calls round robin over dispatcher set 1, probes it with OPTIONS and fails
over on 5xx or timeout. The dispatcher list is written per run from the
destinations given.
"""

from __future__ import annotations

import glob
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .harness import (
    LOOPBACK,
    Address,
    HarnessError,
    ManagedProcess,
    free_port,
    read_tail,
    wait_bound,
    wait_sip_ready,
)

REPO = Path(__file__).resolve().parents[2]
DISPATCHER_CFG = REPO / "bench" / "kamailio" / "dispatcher.cfg"
# the benchmark's anchor: the same job as siplb there and no more (UDP only, warning-level logs)
LEAN_CFG = REPO / "bench" / "kamailio" / "lean.cfg"
MODULE_DIRS = (
    "/usr/lib/*/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/lib64/kamailio/modules",
)
INSTALL_HINT = "Kamailio (`kamailio`, Debian package kamailio) is required; `make test` installs it"


class KamailioMissing(HarnessError):
    """The kamailio binary or its modules are not installed."""


def kamailio_binary() -> str:
    path = shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if Path(p).exists()), None
    )
    if path is None:
        raise KamailioMissing(INSTALL_HINT)
    return path


def kamailio_module_dir() -> str:
    for pattern in MODULE_DIRS:
        for candidate in sorted(glob.glob(pattern)):
            if Path(candidate, "dispatcher.so").exists():
                return candidate + "/"
    raise KamailioMissing(f"no Kamailio module directory with dispatcher.so; {INSTALL_HINT}")


def write_dispatcher_list(path: Path, destinations: Sequence[str], setid: int = 1) -> None:
    """One 'setid uri flags priority' line per destination URI."""
    lines = [f"{setid} {uri} 0 0" for uri in destinations]
    path.write_text("\n".join(lines) + "\n")


class KamailioProcess:
    def __init__(
        self, process: ManagedProcess, host: str, port: int, workdir: Path, ctl_socket: Path
    ) -> None:
        self.process = process
        self.ctl_socket = ctl_socket
        self.pid = process.pid
        self.host = host
        self.port = port
        self.workdir = workdir

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self, limit: int = 20000) -> str:
        """The tail of Kamailio's log (it logs to stderr)."""
        return read_tail(self.process.stderr_path, limit)

    def stop(self) -> int | None:
        code = self.process.stop()
        self.ctl_socket.unlink(missing_ok=True)
        return code


def start_kamailio(
    destinations: Sequence[str],
    workdir: Path,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    ping_interval: int = 1,
    fr_timer_ms: int = 1500,
    config: Path = DISPATCHER_CFG,
    shm_mb: int = 64,
    pkg_mb: int = 8,
    name: str = "kamailio",
    tcp: bool = True,
) -> KamailioProcess:
    """Start Kamailio on host:port (UDP, and TCP unless ``tcp=False``) in front of
    `destinations` (SIP URIs)."""
    binary = kamailio_binary()
    modules = kamailio_module_dir()
    port = port if port is not None else free_port(host)
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    ds_list = home / "dispatcher.list"
    write_dispatcher_list(ds_list, destinations)
    listen = f"[{host}]" if ":" in host else host
    # a unix socket's path is short (104 bytes): not under a deep work directory
    ctl_socket = Path(tempfile.gettempdir()) / f"siplb-kamctl-{port}"
    argv = [
        binary,
        "-DD",
        "-E",
        "-f",
        str(config),
        "-L",
        modules,
        "-A",
        f'MPATH="{modules}"',
        "-A",
        f'DS_LIST="{ds_list}"',
        "-A",
        f"DS_PING_INTERVAL={ping_interval}",
        "-A",
        f"FR_TIMER={fr_timer_ms}",
        "-A",
        f'CTL_SOCKET="unix:{ctl_socket}"',
        "-l",
        f"udp:{listen}:{port}",
        *(["-l", f"tcp:{listen}:{port}"] if tcp else []),
        "-w",
        str(home),
        "-Y",
        str(home),
        "-P",
        str(home / "kamailio.pid"),
        "-m",
        str(shm_mb),
        "-M",
        str(pkg_mb),
    ]
    process = ManagedProcess(name, argv, cwd=home)
    try:
        wait_bound(host, port, "tcp" if tcp else "udp", timeout=10.0, process=process)
        wait_sip_ready((host, port), timeout=10.0, process=process)
    except HarnessError:
        process.stop()
        ctl_socket.unlink(missing_ok=True)
        raise
    return KamailioProcess(process, host, port, home, ctl_socket)
