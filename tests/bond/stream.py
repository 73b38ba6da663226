"""A steady RTP-like stream and its meter, for the bonding lab (run inside its namespaces).

    python stream.py echo --out echo.json PORT...       answer every datagram to its sender,
                                                        noting when each arrived (until SIGTERM)
    python stream.py send --out send.json --rate 50 --duration 20 HOST:PORT...
                                                        one stream per target, numbered, 172
                                                        bytes; notes when each left and when
                                                        its echo came back

Datagram: stream (1 byte), sequence number (4 bytes), padding to 172 bytes (G.711, 20 ms).
Times are CLOCK_MONOTONIC, which every network namespace of a host shares.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

HEAD = struct.Struct("!BI")
SIZE = 172


def echo(ports: list[int], out: Path) -> None:
    arrivals: dict[int, dict[int, float]] = {}
    selector = selectors.DefaultSelector()
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    running = True

    def stop(*_: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    while running:
        for key, _ in selector.select(0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data, source = sock.recvfrom(2048)
            except BlockingIOError:
                continue
            now = time.monotonic()
            if len(data) >= HEAD.size:
                stream, seq = HEAD.unpack_from(data)
                arrivals.setdefault(stream, {}).setdefault(seq, now)
            sock.sendto(data, source)
    out.write_text(json.dumps(arrivals))


def send(targets: list[tuple[str, int]], rate: float, duration: float, out: Path) -> None:
    socks = []
    selector = selectors.DefaultSelector()
    for i, _target in enumerate(targets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, i)
        socks.append(sock)
    start = time.monotonic()
    count = int(duration * rate)
    sent: list[float] = []
    echoed: dict[int, dict[int, float]] = {i: {} for i in range(len(targets))}
    seq = 0
    while True:
        now = time.monotonic()
        if seq < count and now >= start + seq / rate:
            sent.append(now)
            for i, (sock, target) in enumerate(zip(socks, targets, strict=True)):
                payload = HEAD.pack(i, seq).ljust(SIZE, b"\x55")
                with contextlib.suppress(OSError):
                    sock.sendto(payload, target)
            seq += 1
            continue
        wait = start + seq / rate - now if seq < count else start + count / rate + 1.0 - now
        if wait <= 0 and seq >= count:
            break
        for key, _ in selector.select(max(0.0, wait)):
            try:
                data = key.fileobj.recv(2048)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if len(data) >= HEAD.size:
                echoed[key.data].setdefault(HEAD.unpack_from(data)[1], time.monotonic())
    out.write_text(json.dumps({"start": start, "sent": sent, "echoed": echoed}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["echo", "send"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("where", nargs="+")
    args = parser.parse_args()
    if args.role == "echo":
        echo([int(port) for port in args.where], args.out)
    else:
        targets = [(host, int(port)) for host, _, port in (t.rpartition(":") for t in args.where)]
        send(targets, args.rate, args.duration, args.out)


if __name__ == "__main__":
    sys.exit(main())
