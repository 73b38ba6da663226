"""The balancer under test: ``siplb run`` as a real process on loopback, stopped by PID.

start_siplb(workdir, destinations, *, transport="udp", algorithm="round-robin",
            extra="", dest_transport=None) -> SiplbProcess
SiplbProcess: .address .pid .config_path .log_lines() -> list[dict] (JSON log)
              .state_changes(uri) -> list[(timestamp, old, new, cause)]
              .admin_url .admin_token .api(method, path, body=None) -> (status, JSON)
              .stop() -> exit code
Every config gets an ``[admin]`` section on a free loopback port with ADMIN_TOKEN (unless
``extra`` brings its own), so tests never collide on the default port 8080.
"""

from __future__ import annotations

import calendar
import json
import sys
import time
import urllib.error
import urllib.request
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
ADMIN_TOKEN = "e2e-admin-token"


@dataclass(frozen=True, slots=True)
class StateChange:
    at: float  # epoch seconds
    old: str
    new: str
    cause: str


class SiplbProcess:
    def __init__(
        self,
        process: ManagedProcess,
        address: Address,
        config_path: Path,
        admin_url: str | None = None,
        admin_token: str | None = None,
    ) -> None:
        self.process = process
        self.address = address
        self.config_path = config_path
        self.admin_url = admin_url
        self.admin_token = admin_token

    def api(
        self, method: str, path: str, body: object = None, *, token: str | None = ""
    ) -> tuple[int, object]:
        """One admin API request (``token=""``: this balancer's token; None: no token)."""
        assert self.admin_url is not None, "this balancer has no admin port"
        return admin_request(
            self.admin_url + path,
            method,
            body,
            token=self.admin_token if token == "" else token,
        )

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


def admin_request(
    url: str, method: str = "GET", body: object = None, *, token: str | None = None
) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def wait_admin_ready(
    url: str, token: str | None, *, timeout: float, process: ManagedProcess
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _ = admin_request(url + "/api/status", token=token)
        except OSError:
            status = 0
        if status == 200:
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise TimeoutError(f"admin API at {url} not ready (last status {status})")
        time.sleep(0.05)


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
    admin_port: int | None = None,
    admin_token: str = ADMIN_TOKEN,
) -> None:
    admin = ""
    if admin_port is not None and "[admin]" not in extra:
        admin = f'\n[admin]\nlisten = "{LOOPBACK}:{admin_port}"\ntoken = "{admin_token}"\n'
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
{admin}{extra}
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
    admin_port = free_port()
    config = workdir / "siplb.toml"
    write_config(
        config,
        port,
        destinations,
        transport=transport,
        algorithm=algorithm,
        extra=extra,
        admin_port=admin_port,
    )
    own_admin = "[admin]" not in extra
    return launch(workdir, config, (LOOPBACK, port), admin_port if own_admin else None)


def launch(
    workdir: Path,
    config: Path,
    address: tuple[str, int],
    admin_port: int | None,
    *,
    timeout: float = 10.0,
) -> SiplbProcess:
    """``siplb run -c config`` in ``workdir``, returned once its SIP ``address`` answers and,
    with ``admin_port``, its admin API on loopback (token ``ADMIN_TOKEN``); stopped on failure."""
    process = ManagedProcess(
        "siplb", [sys.executable, "-m", "siplb", "run", "-c", str(config)], cwd=workdir
    )
    admin_url = None if admin_port is None else f"http://{LOOPBACK}:{admin_port}"
    try:
        wait_sip_ready(address, timeout=timeout, process=process)
        if admin_url is not None:
            wait_admin_ready(admin_url, ADMIN_TOKEN, timeout=timeout, process=process)
    except Exception:
        process.stop(STOP)
        raise
    token = None if admin_url is None else ADMIN_TOKEN
    return SiplbProcess(process, address, config, admin_url, token)
