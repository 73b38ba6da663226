"""What bonding costs, per mode: bytes on the links per byte carried, and CPU time of the two
relays per 1000 datagrams (plain script, loopback, no root needed).

For each mode a bond server and a bond client run as their own processes (``siplb bond
server|client``) with four links over loopback (the server listens on 0.0.0.0, each link sends
to another 127.0.0.x address). This script sends ``--count`` datagrams of 172 bytes (G.711 in
RTP, 20 ms) at ``--rate`` per second to the client's local port, an echo behind the server sends
each one back, and the figures are read from the relays' status and ``/proc/PID/stat``:

- overhead: link bytes (UDP payload, beats included) per payload byte carried, each way; and
  with the 28 bytes of IPv4 and UDP headers counted on both sides (what an uplink really carries);
- idle: bytes per second the beats cost on four quiet links (both ends);
- CPU: user + system time of the client and of the server per 1000 datagrams carried each way
  (each datagram goes up and its echo comes back).

Run it as ``PYTHONPATH=src python bench/bond.py [--rate 500] [--count 3000] [--modes ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAYLOAD = 172
HEADERS = 28  # IPv4 + UDP
KEY = "42" * 32
MODES = ("balanced", "redundant", "parity")
TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def status(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    found: dict[str, Any] = json.loads(data.partition(b"\r\n\r\n")[2])
    return found


def link_bytes(document: dict[str, Any], field: str = "bytes_sent") -> int:
    peers = document["clients"] if document["role"] == "server" else [document]
    return sum(link[field] for peer in peers for link in peer["links"])


def configs(mode: str, work: Path) -> tuple[Path, Path, int, int, int, int]:
    bond, local, target = free_port(), free_port(), free_port()
    client_status, server_status = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    links = "".join(
        f'[[links]]\nid = {i}\nsource = "127.0.0.1"\nserver = "127.0.0.{i}:{bond}"\n\n'
        for i in range(1, 5)
    )
    client = work / f"client-{mode}.toml"
    client.write_text(
        f'[client]\nid = 1\nkey = "{KEY}"\nserver = ["127.0.0.1:{bond}"]\n'
        f'status = "127.0.0.1:{client_status}"\n\n{links}'
        f'[[flows]]\nid = 1\nmode = "{mode}"\nports = {local}\n'
    )
    server = work / f"server-{mode}.toml"
    server.write_text(
        f'[server]\nlisten = ["0.0.0.0:{bond}"]\nstatus = "127.0.0.1:{server_status}"\n\n'
        f'[[clients]]\nid = 1\nkey = "{KEY}"\n\n'
        f'[[flows]]\nid = 1\nmode = "{mode}"\ntarget = "127.0.0.1"\nports = {target}\n'
    )
    return client, server, local, target, client_status, server_status


def run_mode(mode: str, rate: float, count: int, work: Path) -> dict[str, float]:
    client_toml, server_toml, local, target, client_port, server_port = configs(mode, work)
    relay = [sys.executable, "-m", "siplb", "bond"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen([*relay, "server", "-c", str(server_toml)], **quiet)  # type: ignore[call-overload]
    client = subprocess.Popen([*relay, "client", "-c", str(client_toml)], **quiet)  # type: ignore[call-overload]
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", target))
    echo.setblocking(False)
    app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    app.bind(("127.0.0.1", 0))
    app.setblocking(False)
    try:
        wait_up(client_port)
        idle = idle_bytes(client_port, server_port)
        before = cpu_seconds(client.pid), cpu_seconds(server.pid)
        first = status(client_port)
        bytes_before = link_bytes(first), link_bytes(status(server_port))
        echoed = pump(app, echo, local, rate, count)
        after = cpu_seconds(client.pid), cpu_seconds(server.pid)
        last = status(client_port)
        bytes_after = link_bytes(last), link_bytes(status(server_port))
        packets = link_bytes(last, "packets_sent") - link_bytes(first, "packets_sent")
    finally:
        for process in (client, server):
            process.terminate()
            process.wait(10)
        echo.close()
        app.close()
    carried = count * PAYLOAD
    up, down = (bytes_after[i] - bytes_before[i] for i in (0, 1))
    return {
        "echoed": echoed / count,
        "up": up / carried,
        "down": down / carried,
        "up_wire": (up + HEADERS * packets) / (count * (PAYLOAD + HEADERS)),
        "idle_bytes_per_s": idle,
        "client_cpu_ms_per_1000": (after[0] - before[0]) * 1000 / count * 1000,
        "server_cpu_ms_per_1000": (after[1] - before[1]) * 1000 / count * 1000,
    }


def wait_up(client_port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if all(link["state"] == "up" for link in status(client_port)["links"]):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the bond did not come up")


def idle_bytes(client_port: int, server_port: int, seconds: float = 2.0) -> float:
    first = link_bytes(status(client_port)) + link_bytes(status(server_port))
    time.sleep(seconds)
    last = link_bytes(status(client_port)) + link_bytes(status(server_port))
    return (last - first) / seconds


def pump(app: socket.socket, echo: socket.socket, local: int, rate: float, count: int) -> int:
    """Send ``count`` datagrams at ``rate``, echo what reaches the target, count the echoes."""
    payload = bytes(PAYLOAD)
    start, sent, echoed = time.monotonic(), 0, 0
    end = start + count / rate + 1.0
    while time.monotonic() < end:
        now = time.monotonic()
        while sent < count and now >= start + sent / rate:
            app.sendto(payload, ("127.0.0.1", local))
            sent += 1
        for sock in (echo, app):
            while True:
                try:
                    data, source = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                if sock is echo:
                    echo.sendto(data, source)
                else:
                    echoed += 1
        time.sleep(0.0005)
    return echoed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="datagrams per second")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    print(f"{args.count} datagrams of {PAYLOAD} bytes at {args.rate:g}/s, four links, loopback")
    print(
        f"{'mode':<10} {'echoed':>7} {'bytes up':>9} {'down':>6} {'up, with IP/UDP':>16} "
        f"{'idle B/s':>9} {'client CPU':>11} {'server CPU':>11}"
    )
    with tempfile.TemporaryDirectory() as work:
        for mode in args.modes:
            f = run_mode(mode, args.rate, args.count, Path(work))
            print(
                f"{mode:<10} {f['echoed']:>7.1%} {f['up']:>8.2f}x {f['down']:>5.2f}x "
                f"{f['up_wire']:>15.2f}x {f['idle_bytes_per_s']:>9.0f} "
                f"{f['client_cpu_ms_per_1000']:>8.0f} ms {f['server_cpu_ms_per_1000']:>8.0f} ms"
            )
    print("CPU: user + system per 1000 datagrams carried (each one up and its echo back)")


if __name__ == "__main__":
    main()
