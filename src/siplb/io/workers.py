"""Sockets and steering for ``workers = N`` processes sharing the UDP listeners.

Every UDP listener is a ``SO_REUSEPORT`` group of N sockets bound to the same address, one per
worker, made by the parent before it starts the workers. A classic BPF program on the group
spreads datagrams over the workers at random, so a single busy peer (one trunk, one SIPp caller)
does not load one worker alone. The worker a datagram lands on then finds its *owner* by the
cluster's one ownership rule (``siplb.cluster.ownership``), the workers being the members
``node.0`` .. ``node.N-1``:

- a request, and a response to a request that is not ours: rendezvous hashing of the Call-ID
  over the workers, so an INVITE, its retransmissions, its CANCEL and ACK and the dialog's later
  requests (BYE) all meet the server transaction and the call accounting of one worker;
- a response whose top Via branch is ours (``z9hG4bK-node.W-...``): worker W, whose client
  transaction (or probe, or NAT keepalive) sent the request.

A datagram owned by another worker goes to it over a private loopback socket with its source
address and listener, and the owner handles it as if it had received it. The same sockets carry
the workers' control messages (health states, passive health inputs, admin actions).
"""

from __future__ import annotations

import ctypes
import json
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from siplb.cluster import Member, Ownership
from siplb.io.udp import bind_udp

CHANNEL_BUFFER = 4 * 1024 * 1024

# the two kinds of message on a worker's channel socket
DATAGRAM = 1  # a datagram for its owner: listener, source address, bytes
CONTROL = 2  # JSON: {"op": ..., ...}

_ADDRESS = struct.Struct("!BBH")  # kind, listener index, source port; then host length + host


class Steering:
    """Which worker owns a datagram (see the module's rules)."""

    def __init__(self, node_id: str, workers: int, worker: int) -> None:
        self.workers = workers
        self.worker = worker
        members = [Member(node_id, w) for w in range(workers)]
        self.ownership = Ownership(members[worker], members)

    def owner(self, data: bytes) -> int:
        return self.ownership.owner(data).worker


def encode_datagram(listener: int, source: tuple[str, int], data: bytes) -> bytes:
    host = source[0].encode("ascii")
    return _ADDRESS.pack(DATAGRAM, listener, source[1]) + bytes((len(host),)) + host + data


def decode_datagram(message: bytes) -> tuple[int, tuple[str, int], bytes]:
    """(listener, source address, datagram) of an ``encode_datagram`` message."""
    _, listener, port = _ADDRESS.unpack_from(message)
    length = message[_ADDRESS.size]
    start = _ADDRESS.size + 1
    host = message[start : start + length].decode("ascii")
    return listener, (host, port), message[start + length :]


def encode_control(op: str, **fields: Any) -> bytes:
    return bytes((CONTROL,)) + json.dumps({"op": op, **fields}).encode()


def decode_control(message: bytes) -> dict[str, Any]:
    value = json.loads(message[1:])
    if not isinstance(value, dict):
        raise ValueError("a control message is a JSON object")
    return value


@dataclass(slots=True)
class WorkerSockets:
    """Every socket of a worker group, made by the parent; worker ``w`` uses ``udp[i][w]`` for
    UDP listener ``i`` and ``channels[w]``, and knows its peers by ``channel_addresses``."""

    udp: dict[int, list[socket.socket]]  # listener index -> one socket per worker
    channels: list[socket.socket]
    channel_addresses: list[tuple[str, int]]

    def keep_only(self, worker: int) -> None:
        """In worker ``worker``: close the others' sockets (the parent keeps them open)."""
        for group in self.udp.values():
            for index, sock in enumerate(group):
                if index != worker:
                    sock.close()
        for index, sock in enumerate(self.channels):
            if index != worker:
                sock.close()

    def close(self) -> None:
        for group in self.udp.values():
            for sock in group:
                sock.close()
        for sock in self.channels:
            sock.close()


def open_worker_sockets(
    listeners: Sequence[tuple[int, str, int, int]], workers: int
) -> WorkerSockets:
    """For each UDP listener ``(index, host, port, recv_buffer)`` a SO_REUSEPORT group of
    ``workers`` sockets spread at random; one loopback channel socket per worker."""
    out = WorkerSockets({}, [], [])
    try:
        for index, host, port, recv_buffer in listeners:
            group = out.udp.setdefault(index, [])
            for _ in range(workers):
                sock = bind_udp(host, port, recv_buffer, reuse_port=True)
                group.append(sock)
                port = sock.getsockname()[1]  # port 0: every member takes the first one's port
            attach_random_steering(group[0], workers)
        for _ in range(workers):
            channel = bind_udp("127.0.0.1", 0, CHANNEL_BUFFER)
            out.channels.append(channel)
            out.channel_addresses.append(("127.0.0.1", int(channel.getsockname()[1])))
    except OSError:
        out.close()
        raise
    return out


SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
_BPF_LD_W_ABS, _BPF_ALU_MOD_K, _BPF_RET_A = 0x20, 0x94, 0x16
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_RANDOM
_SOCK_FILTER = struct.Struct("=HBBI")


def attach_random_steering(sock: socket.socket, workers: int) -> bool:
    """Make ``sock``'s reuseport group pick a member at random (``A = random % workers``)
    instead of by the sender's address; False where the system does not allow it (the kernel
    then hashes by address, and ownership still routes every datagram right)."""
    program = b"".join(
        (
            _SOCK_FILTER.pack(_BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
            _SOCK_FILTER.pack(_BPF_ALU_MOD_K, 0, 0, workers),
            _SOCK_FILTER.pack(_BPF_RET_A, 0, 0, 0),
        )
    )
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("@HP", len(program) // _SOCK_FILTER.size, ctypes.addressof(buffer))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError:
        return False
    return True
