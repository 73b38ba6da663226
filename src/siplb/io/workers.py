"""Sockets and the channel of ``workers = N`` processes sharing the UDP listeners.

Every UDP listener is a ``SO_REUSEPORT`` group of N sockets bound to the same address, one per
worker, made by the parent before it starts the workers. A classic BPF program on the group
spreads datagrams over the workers at random, so a single busy peer (one trunk, one SIPp caller)
does not load one worker alone. The worker a datagram lands on then finds its *owner* by the
cluster's one ownership rule (``siplb.cluster.ownership``, in the core's admission stage), the
workers being the members ``node.0`` .. ``node.N-1``: a response whose top Via branch is ours
goes to the worker it names, anything else to the rendezvous owner of its Call-ID.

A datagram owned by another worker goes to it over a private loopback socket with its source
address and listener, and the owner handles it as if it had received it. The same sockets carry
the workers' control messages (health states, passive health inputs, admin actions). Every
frame is sealed (``siplb.cluster.channel``, the format nodes use between hosts) with a secret
the parent draws at each start and hands to the workers with the sockets; ``WorkerLink`` seals,
opens and counts the frames it rejects.

A worker's channel socket is its hand-over queue, a second receive queue beside its listeners':
it gets the receive buffer of the largest UDP listener, so that a fill fraction means about the
same wait in either, and the worker watches its fill with theirs (``WorkerLink.backlog``).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from siplb.cluster import Member
from siplb.cluster.channel import Opened, Opener, Sealer
from siplb.io.driver import receive_backlog
from siplb.io.udp import UdpEndpoint, bind_udp
from siplb.logs import ListenerError

log = logging.getLogger("siplb")

CHANNEL_BUFFER = 4 * 1024 * 1024  # without a UDP listener (only control messages then)
SECRET_SIZE = 32  # bytes of os.urandom, drawn by the parent at each start

# the two kinds of frame on a worker's channel socket (the sealed frame's ``kind``)
DATAGRAM = 1  # a datagram for its owner: listener, source address, bytes
CONTROL = 2  # JSON: {"op": ..., ...}

_ADDRESS = struct.Struct("!BH")  # listener index, source port; then host length + host


def encode_datagram(listener: int, source: tuple[str, int], data: bytes) -> bytes:
    host = source[0].encode("ascii")
    return _ADDRESS.pack(listener, source[1]) + bytes((len(host),)) + host + data


def decode_datagram(payload: bytes) -> tuple[int, tuple[str, int], bytes]:
    """(listener, source address, datagram) of an ``encode_datagram`` payload; raises
    ``ValueError`` for a truncated one."""
    try:
        listener, port = _ADDRESS.unpack_from(payload)
        length = payload[_ADDRESS.size]
    except (struct.error, IndexError) as exc:
        raise ValueError("a truncated datagram frame") from exc
    start = _ADDRESS.size + 1
    host = payload[start : start + length].decode("ascii")
    return listener, (host, port), payload[start + length :]


def encode_control(op: str, /, **fields: Any) -> bytes:
    return json.dumps({"op": op, **fields}).encode()


def decode_control(payload: bytes) -> dict[str, Any]:
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise ValueError("a control message is a JSON object")
    return value


class WorkerLink:
    """One worker's end of the channel: seals what it sends to the other workers, opens what
    they send it (a forged, replayed, stale or malformed frame is dropped and counted in
    ``stats`` as ``rejected_<reason>``) and hands each opened frame to ``on_datagram`` or
    ``on_control``."""

    def __init__(
        self,
        me: Member,
        sockets: WorkerSockets,
        *,
        on_datagram: Callable[[int, tuple[str, int], bytes], None],
        on_control: Callable[[dict[str, Any]], None],
    ) -> None:
        self.me = me
        self.sockets = sockets
        self.peers = sockets.channel_addresses
        self.sealer = Sealer(sockets.secret, me, boot=time.time_ns() // 1_000_000)
        self.opener = Opener(sockets.secret)
        self.on_datagram = on_datagram
        self.on_control = on_control
        self.stats: Counter[str] = Counter()  # handed_over, taken_over, rejected_<reason>
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UdpEndpoint(self.receive, _log_error),
            sock=self.sockets.channels[self.me.worker],
        )
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def backlog(self) -> float:
        """How full this worker's hand-over queue (its channel socket) is, 0-1."""
        return receive_backlog(self.sockets.channels[self.me.worker])

    def hand_over(self, worker: int, listener: int, source: tuple[str, int], data: bytes) -> None:
        self.stats["handed_over"] += 1
        self._send(worker, DATAGRAM, encode_datagram(listener, source, data))

    def control(self, to: int, op: str, /, **fields: Any) -> None:
        self._send(to, CONTROL, encode_control(op, **fields))

    def broadcast(self, op: str, /, **fields: Any) -> None:
        for worker in range(len(self.peers)):
            if worker != self.me.worker:
                self.control(worker, op, **fields)

    def _send(self, worker: int, kind: int, payload: bytes) -> None:
        if self._transport is None:
            return  # not started or closing: a datagram's sender retransmits
        frame = self.sealer.seal(kind, payload, time.time())
        try:
            self._transport.sendto(frame, self.peers[worker])
        except OSError as exc:
            log.debug("channel send to worker %d failed: %s", worker, exc)

    def receive(self, frame: bytes, addr: tuple[str, int]) -> None:
        opened = self.opener.open(frame, time.time())
        if not isinstance(opened, Opened):
            self.stats[f"rejected_{opened.reason.value}"] += 1
            return
        try:
            if opened.kind == DATAGRAM:
                listener, source, data = decode_datagram(opened.payload)
                self.stats["taken_over"] += 1
                self.on_datagram(listener, source, data)
            elif opened.kind == CONTROL:
                self.on_control(decode_control(opened.payload))
            else:
                self.stats["rejected_malformed"] += 1
        except (ValueError, KeyError, TypeError) as exc:  # authentic, but not understood
            self.stats["rejected_malformed"] += 1
            log.warning("bad channel frame from %s: %s", opened.sender.tag, exc)


def _log_error(exc: OSError) -> None:
    log.debug("channel error: %s", exc)


@dataclass(slots=True)
class WorkerSockets:
    """Every socket of a worker group, made by the parent; worker ``w`` uses ``udp[i][w]`` for
    UDP listener ``i`` and ``channels[w]``, knows its peers by ``channel_addresses`` and seals
    its channel frames with ``secret``."""

    udp: dict[int, list[socket.socket]]  # listener index -> one socket per worker
    channels: list[socket.socket]
    channel_addresses: list[tuple[str, int]]
    secret: bytes = field(default_factory=lambda: os.urandom(SECRET_SIZE), repr=False)

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
    ``workers`` sockets spread at random; one loopback channel socket per worker, with the
    largest listener's buffer; and this start's channel secret."""
    out = WorkerSockets({}, [], [], os.urandom(SECRET_SIZE))
    channel_buffer = max((buffer for *_, buffer in listeners), default=CHANNEL_BUFFER)
    try:
        for index, host, port, recv_buffer in listeners:
            group = out.udp.setdefault(index, [])
            for _ in range(workers):
                try:
                    sock = bind_udp(host, port, recv_buffer, reuse_port=True)
                except OSError as exc:  # named by the parent, which has the listener's name
                    raise ListenerError(index, None, "udp", (host, port), exc) from exc
                group.append(sock)
                port = sock.getsockname()[1]  # port 0: every member takes the first one's port
            attach_random_steering(group[0], workers)
        for _ in range(workers):
            channel = bind_udp("127.0.0.1", 0, channel_buffer)
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
