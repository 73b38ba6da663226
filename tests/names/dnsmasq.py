"""A real DNS server for the tests: Debian's dnsmasq on 127.0.0.1 at a free high port, with the
records a test gives, stopped by PID. Host (A/AAAA) records live in an ``--addn-hosts`` file, so
a test changes them mid-run with SIGHUP (dnsmasq reads the file again, never stops answering);
SRV and NAPTR records are command-line options: changing them restarts the server."""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.harness import LOOPBACK, HarnessError, ManagedProcess, free_port

DNSMASQ = "/usr/sbin/dnsmasq"
DOMAIN = "siplb.test"  # answered locally: NXDOMAIN for names it does not hold, never REFUSED


@dataclass(frozen=True, slots=True)
class SrvRecord:
    name: str  # _sip._udp.pbx.siplb.test
    target: str
    port: int
    priority: int = 0
    weight: int = 0


@dataclass(frozen=True, slots=True)
class Records:
    hosts: Sequence[tuple[str, str]] = ()  # (name, address)
    srv: Sequence[SrvRecord] = ()
    naptr: Sequence[str] = field(default=())  # --naptr-record values
    ttl: int = 1  # --local-ttl: how long an answer may be cached


def dnsmasq_binary() -> str:
    if not os.access(DNSMASQ, os.X_OK):
        raise HarnessError(f"{DNSMASQ} not found: install Debian's dnsmasq-base (make system-deps)")
    return DNSMASQ


class Dnsmasq:
    """One dnsmasq; ``start``, ``set_hosts`` (SIGHUP), ``restart`` and ``stop`` (by its PID)."""

    def __init__(self, workdir: Path, records: Records, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port(LOOPBACK)
        self.hosts_file = workdir / "dns-hosts"
        self.records = records
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def server(self) -> str:
        """The ``[dns] servers`` entry that reaches it."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._write_hosts(self.records.hosts)
        self.starts += 1
        argv = [
            dnsmasq_binary(),
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--log-facility=-",
            f"--port={self.port}",
            f"--listen-address={LOOPBACK}",
            "--bind-interfaces",
            "--pid-file=",
            "--user=root",
            f"--local=/{DOMAIN}/",
            f"--local-ttl={self.records.ttl}",
            f"--addn-hosts={self.hosts_file}",
            *(
                f"--srv-host={r.name},{r.target},{r.port},{r.priority},{r.weight}"
                for r in self.records.srv
            ),
            *(f"--naptr-record={n}" for n in self.records.naptr),
        ]
        self.process = ManagedProcess(f"dnsmasq{self.starts}", argv, cwd=self.workdir)
        self.wait_answering(f"ready.{DOMAIN}", timeout=5.0)

    def set_hosts(self, hosts: Sequence[tuple[str, str]]) -> None:
        """New A/AAAA records without a pause in service: the file, then SIGHUP."""
        self.records = Records(hosts, self.records.srv, self.records.naptr, self.records.ttl)
        self._write_hosts(hosts)
        assert self.process is not None
        self.process.signal(signal.SIGHUP)

    def restart(self, records: Records) -> None:
        self.stop()
        self.records = records
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def _write_hosts(self, hosts: Sequence[tuple[str, str]]) -> None:
        lines = [f"{address} {name}\n" for name, address in hosts]
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(self.hosts_file)

    def wait_answering(self, name: str, timeout: float) -> None:
        """Until the server answers a query for ``name`` (any answer), or HarnessError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(f"dnsmasq exited:\n{self.process.output_tail()}")
            if query_a(self.port, name, timeout=0.2) is not None:
                return
        raise HarnessError(f"dnsmasq on port {self.port} does not answer")


def query_a(port: int, name: str, timeout: float) -> int | None:
    """A bare DNS query of type A; the answer's RCODE, or None without an answer in time."""
    header = struct.pack("!HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(header + qname + struct.pack("!HH", 1, 1), (LOOPBACK, port))
            data = sock.recv(512)
        except OSError:
            return None
    return data[3] & 0x0F if len(data) >= 12 else None
