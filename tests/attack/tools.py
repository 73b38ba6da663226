"""Attack tools for the protection tests: each one small, bounded and loopback-only.

Every tool stops by itself: a flood after ``count`` datagrams or ``duration`` seconds, whichever
comes first; a listener after its ``lifetime``; a stream attack after ``duration``. Nothing here
sends to an address outside 127.0.0.0/8 (``loopback`` refuses it), and every socket is bound to a
chosen 127.0.0.x source, so the balancer sees each attack as coming from its own host.

    udp_flood(target, make, source_host=..., rate=..., count=..., duration=...) -> FloodReport
        ``make(n, local)`` builds datagram number n; templates below: ``invite``,
        ``options_to``, ``MALFORMED`` (parse faults with a usable Via), ``scanner``.
    scanner_flood(target, source_host=..., user_agent="friendly-scanner", ...) -> FloodReport
        SIPVicious-style OPTIONS / REGISTER / INVITE, a new To user each time.
    probe_relay(lb, foreign, destination, source_host=...) -> dict[(variant, method), statuses]
        In-dialog-looking requests (To tag) that lead to ``foreign`` by Request-URI, Route or
        ``;alias=``.
    UdpPeer(source_host)                 one socket: send, collect replies for a while
    UdpRecorder(host, port, answer=...)  a foreign host or a tiny PBX that records what it gets
    tcp_attack(target, sources=..., per_source=..., duration=..., first=..., drip=...)
        -> StreamReport; ``tcp_hog``, ``slowloris``, ``half_sent_headers``, ``slow_body``.
    Background(fn, ...)                  run a tool in a thread; ``.result()`` joins it
    rss_kib(pid)                         VmRSS of a process
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import os
import random
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Generic, TypeVar

Address = tuple[str, int]
Template = Callable[[int, Address], bytes]
T = TypeVar("T")

RUN = f"{os.getpid():x}{random.randrange(16**6):06x}"  # keeps Call-IDs unique across runs
MAX_KEPT = 200_000  # replies kept by one flood (the count goes on)


def loopback(address: Address) -> Address:
    """``address`` itself; refuses anything outside 127.0.0.0/8."""
    if not ip_address(address[0]).is_loopback:
        raise ValueError(f"attack tools only talk to loopback, not {address[0]}")
    return address


# --- SIP text ------------------------------------------------------------------------------------


def sip_request(
    method: str,
    ruri: str,
    *,
    local: Address,
    call_id: str,
    from_tag: str,
    to_uri: str,
    to_tag: str | None = None,
    cseq: int = 1,
    branch: str | None = None,
    routes: Sequence[str] = (),
    headers: Sequence[str] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> bytes:
    """A well-formed request over UDP from ``local`` (``headers`` are extra lines)."""
    host, port = local
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + call_id};rport",
        "Max-Forwards: 70",
        *(f"Route: {route}" for route in routes),
        f"From: <sip:attacker@{host}:{port}>;tag={from_tag}",
        f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:attacker@{host}:{port}>",
        *headers,
    ]
    if body:
        lines.append(f"Content-Type: {content_type or 'application/sdp'}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sdp(host: str) -> bytes:
    return (
        f"v=0\r\no=atk 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


_COMPACT = {"call-id": "i", "via": "v", "from": "f", "to": "t", "user-agent": ""}


def header(message: bytes, name: str) -> str | None:
    """The first value of header ``name`` (long or compact form), or None."""
    wanted = {name.lower(), _COMPACT.get(name.lower(), "")} - {""}
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().decode("latin-1").lower() in wanted:
            return value.strip().decode("latin-1")
    return None


def status_of(message: bytes) -> int | None:
    """The status code of a response; None for a request or garbage."""
    if not message.startswith(b"SIP/2.0 "):
        return None
    code = message[8:11]
    return int(code) if code.isdigit() else None


def start_line(message: bytes) -> str:
    return message.split(b"\r\n", 1)[0].decode("latin-1")


def statuses_by_call(replies: Iterable[bytes]) -> dict[str, list[int]]:
    """Status codes received, by Call-ID, in arrival order (garbage under '?')."""
    out: dict[str, list[int]] = {}
    for reply in replies:
        out.setdefault(header(reply, "call-id") or "?", []).append(status_of(reply) or 0)
    return out


# --- threads -------------------------------------------------------------------------------------


class Background(Generic[T]):
    """Run ``fn(*args, **kwargs)`` in a daemon thread; ``result()`` joins and returns it."""

    def __init__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self._value = fn(*args, **kwargs)
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self, timeout: float = 60.0) -> T:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"attack tool still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


# --- one UDP socket -------------------------------------------------------------------------------


class UdpPeer:
    """A UDP socket bound to ``source_host`` (any port): send, and collect what comes back."""

    def __init__(self, source_host: str, port: int = 0) -> None:
        loopback((source_host, port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((source_host, port))
        self.sock.setblocking(False)
        self.local: Address = self.sock.getsockname()[:2]
        self.received: list[bytes] = []
        self.count = 0  # datagrams received, also past MAX_KEPT

    def send(self, data: bytes, target: Address) -> bool:
        try:
            self.sock.sendto(data, loopback(target))
        except (BlockingIOError, ConnectionRefusedError):
            return False  # a full buffer, or ICMP of an earlier datagram
        return True

    def drain(self) -> int:
        """Read what is waiting, without blocking; how many datagrams."""
        got = 0
        while True:
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return got
            except ConnectionRefusedError:
                continue
            got += 1
            self.count += 1
            if len(self.received) < MAX_KEPT:
                self.received.append(data)

    def collect(self, seconds: float) -> list[bytes]:
        """Keep reading for ``seconds`` (0: just what is waiting); everything received so far."""
        deadline = time.monotonic() + seconds
        self.drain()
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            while (left := deadline - time.monotonic()) > 0:
                if sel.select(min(left, 0.05)):
                    self.drain()
        finally:
            sel.close()
        return self.received

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- floods ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class FloodReport:
    sent: int
    elapsed: float  # seconds spent sending
    replies: list[bytes]
    received: int  # replies counted (also those past MAX_KEPT)
    source: Address

    @property
    def statuses(self) -> Counter[int]:
        return Counter(status_of(r) or 0 for r in self.replies)

    def by_call(self) -> dict[str, list[int]]:
        return statuses_by_call(self.replies)

    def describe(self) -> str:
        top = ", ".join(f"{k}x{v}" for k, v in sorted(self.statuses.items()))
        return (
            f"from {self.source[0]}: sent {self.sent} in {self.elapsed:.2f} s "
            f"({self.sent / max(self.elapsed, 1e-3):.0f}/s), replies {self.received} [{top}]"
        )


def udp_flood(
    target: Address,
    make: Template | Sequence[Template],
    *,
    source_host: str,
    rate: float,
    count: int,
    duration: float,
    linger: float = 0.5,
) -> FloodReport:
    """Send ``make(n, local)`` for n = 0, 1, ... at ``rate`` per second from one socket, until
    ``count`` are sent or ``duration`` has passed, then collect replies ``linger`` more seconds.
    A sequence of templates is used in turn."""
    loopback(target)
    makers = [make] if callable(make) else list(make)
    if count <= 0 or rate <= 0 or duration <= 0:
        raise ValueError("a flood needs a positive count, rate and duration")
    with UdpPeer(source_host) as peer:
        start = time.monotonic()
        sent = 0
        while sent < count:
            elapsed = time.monotonic() - start
            if elapsed >= duration:
                break
            due = min(count, int(elapsed * rate) + 1)
            for n in range(sent, min(due, sent + 500)):
                peer.send(makers[n % len(makers)](n, peer.local), target)
            sent = max(sent, min(due, sent + 500))
            peer.drain()
            next_at = start + sent / rate
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(min(pause, 0.01))
        elapsed = time.monotonic() - start
        peer.collect(linger)
        return FloodReport(sent, elapsed, peer.received, peer.count, peer.local)


def invite(target: Address, *, user: str = "flood", user_agent: str | None = None) -> Template:
    """Initial INVITEs with SDP, a new Call-ID each."""
    host, port = target
    ua = [f"User-Agent: {user_agent}"] if user_agent else []

    def make(n: int, local: Address) -> bytes:
        call = f"inv-{RUN}-{local[0]}-{local[1]}-{n}"
        return sip_request(
            "INVITE",
            f"sip:{user}{n}@{host}:{port}",
            local=local,
            call_id=call,
            from_tag=f"f{n}",
            to_uri=f"sip:{user}{n}@{host}:{port}",
            headers=ua,
            body=sdp(local[0]),
        )

    return make


def options_to(target: Address) -> Template:
    """OPTIONS addressed to ``target`` itself (the balancer answers them)."""
    host, port = target

    def make(n: int, local: Address) -> bytes:
        return sip_request(
            "OPTIONS",
            f"sip:{host}:{port}",
            local=local,
            call_id=f"opt-{RUN}-{local[0]}-{local[1]}-{n}",
            from_tag=f"o{n}",
            to_uri=f"sip:{host}:{port}",
        )

    return make


def _malformed(via: str, cseq: str, method: str = "INVITE") -> Template:
    """A request with a usable Via (so a reply can be sent) and one fault."""

    def make(n: int, local: Address) -> bytes:
        host, port = local
        return (
            f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port}{via.format(n=n)}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:mal@{host}:{port}>;tag=m{n}\r\n"
            f"To: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: mal-{RUN}-{host}-{port}-{n}\r\n"
            f"CSeq: {cseq}\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()

    return make


# The faults the review found (a branch without value; CSeq values that broke the core).
MALFORMED: dict[str, Template] = {
    "via-branch-no-value": _malformed(";branch;rport", "1 INVITE"),
    "via-branch-empty": _malformed(";branch=;rport", "1 INVITE"),
    "cseq-not-a-number": _malformed(";branch=z9hG4bKm{n};rport", "x INVITE"),
    "cseq-too-large": _malformed(";branch=z9hG4bKm{n};rport", "99999999999 INVITE"),
    "cseq-negative": _malformed(";branch=z9hG4bKm{n};rport", "-1 INVITE"),
    "cseq-no-method": _malformed(";branch=z9hG4bKm{n};rport", "1"),
    "cseq-other-method": _malformed(";branch=z9hG4bKm{n};rport", "1 BYE"),
    "cseq-bye-no-method": _malformed(";branch=z9hG4bKm{n};rport", "7", method="BYE"),
}


# --- scanners -------------------------------------------------------------------------------------

SCANNER_METHODS = ("OPTIONS", "REGISTER", "INVITE")


def scanner(
    target: Address,
    *,
    user_agent: str = "friendly-scanner",
    methods: Sequence[str] = SCANNER_METHODS,
    first_user: int = 100,
) -> Template:
    """What SIPVicious (svmap, svwar) sends: ``User-agent``, a sipvicious From, one To user each."""
    host, port = target

    def make(n: int, local: Address) -> bytes:
        lhost, lport = local
        method = methods[n % len(methods)]
        user = first_user + n
        body = sdp(lhost) if method == "INVITE" else b""
        lines = [
            f"{method} sip:{user}@{host}:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK-{RUN}-{n};rport",
            "Max-Forwards: 70",
            f'To: "{user}"<sip:{user}@{host}:{port}>',
            f'From: "sipvicious"<sip:{user}@{host}:{port}>;tag={RUN}{n:x}',
            f"User-agent: {user_agent}",
            f"Call-ID: scan-{RUN}-{lhost}-{n}",
            f"Contact: sip:{user}@{lhost}:{lport}",
            f"CSeq: 1 {method}",
            "Accept: application/sdp",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    return make


def scanner_flood(
    target: Address,
    *,
    source_host: str,
    rate: float,
    count: int,
    duration: float,
    user_agent: str = "friendly-scanner",
    methods: Sequence[str] = SCANNER_METHODS,
    linger: float = 0.5,
) -> FloodReport:
    make = scanner(target, user_agent=user_agent, methods=methods)
    return udp_flood(
        target,
        make,
        source_host=source_host,
        rate=rate,
        count=count,
        duration=duration,
        linger=linger,
    )


# --- relay probes ---------------------------------------------------------------------------------

RELAY_VARIANTS = ("ruri", "route", "route-after-us", "alias")
RELAY_METHODS = ("INVITE", "MESSAGE", "BYE", "INFO")


def relay_request(
    variant: str,
    method: str,
    *,
    local: Address,
    lb: Address,
    foreign: Address,
    destination: Address,
    n: int = 0,
) -> bytes:
    """An in-dialog-looking request (To tag) whose next hop is ``foreign``:
    ruri            Request-URI names the foreign host
    route           Request-URI a destination, Route the foreign host
    route-after-us  Route: us, then the foreign host (a forged record-route set)
    alias           Request-URI a destination with ;alias= naming the foreign host"""
    fhost, fport = foreign
    dhost, dport = destination
    lhost, lport = lb
    ruri = f"sip:victim@{dhost}:{dport}"
    routes: list[str] = []
    if variant == "ruri":
        ruri = f"sip:victim@{fhost}:{fport}"
    elif variant == "route":
        routes = [f"<sip:{fhost}:{fport};lr>"]
    elif variant == "route-after-us":
        routes = [f"<sip:{lhost}:{lport};lr>", f"<sip:{fhost}:{fport};lr>"]
    elif variant == "alias":
        ruri = f"sip:victim@{dhost}:{dport};alias={fhost}~{fport}~1"
    else:
        raise ValueError(f"unknown relay variant {variant!r}")
    body, content_type = b"", None
    if method == "INVITE":
        body = sdp(local[0])
    elif method in ("MESSAGE", "INFO"):
        body, content_type = b"relayed? " + method.encode(), "text/plain"
    return sip_request(
        method,
        ruri,
        local=local,
        call_id=relay_call_id(variant, method, local, n),
        from_tag=f"rf{n}",
        to_uri=f"sip:victim@{fhost}:{fport}",
        to_tag=f"dialog{n}",
        cseq=2,
        routes=routes,
        body=body,
        content_type=content_type,
    )


def relay_call_id(variant: str, method: str, local: Address, n: int = 0) -> str:
    return f"relay-{variant}-{method}-{RUN}-{local[0]}-{local[1]}-{n}"


def probe_relay(
    lb: Address,
    foreign: Address,
    destination: Address,
    *,
    source_host: str,
    variants: Sequence[str] = RELAY_VARIANTS,
    methods: Sequence[str] = RELAY_METHODS,
    wait: float = 1.0,
) -> dict[tuple[str, str], list[int]]:
    """Send one probe per (variant, method) from one socket; the statuses each got in ``wait``."""
    with UdpPeer(source_host) as peer:
        cases = list(itertools.product(variants, methods))
        for variant, method in cases:
            data = relay_request(
                variant, method, local=peer.local, lb=lb, foreign=foreign, destination=destination
            )
            peer.send(data, lb)
        by_call = statuses_by_call(peer.collect(wait))
        return {(v, m): by_call.get(relay_call_id(v, m, peer.local), []) for v, m in cases}


# --- UDP listeners: a foreign host, a tiny PBX ----------------------------------------------------


class UdpRecorder:
    """Records every datagram that reaches ``host:port`` for at most ``lifetime`` seconds.

    answer: "silent"  nothing (a black hole)
            "ok"      200 to every request but ACK (a host that accepts anything)
            "trying"  OPTIONS 200, INVITE only 100 Trying (a PBX that never answers a call)
    """

    def __init__(
        self, host: str, port: int, *, answer: str = "silent", lifetime: float = 60.0
    ) -> None:
        if answer not in ("silent", "ok", "trying"):
            raise ValueError(answer)
        self.address: Address = loopback((host, port))
        self.answer = answer
        self.datagrams: list[tuple[bytes, Address]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind(self.address)
        self._sock.settimeout(0.05)
        self._deadline = time.monotonic() + lifetime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def sip_uri(self) -> str:
        return f"sip:{self.address[0]}:{self.address[1]}"

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                data, peer = self._sock.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                continue
            except OSError:
                return
            with self._lock:
                if len(self.datagrams) < MAX_KEPT:
                    self.datagrams.append((data, peer))
            reply = self._reply(data)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(reply, loopback(peer))

    def _reply(self, data: bytes) -> bytes | None:
        if self.answer == "silent" or status_of(data) is not None:
            return None
        method = data.split(b" ", 1)[0]
        if method == b"ACK":
            return None
        if self.answer == "trying" and method == b"INVITE":
            return response(data, 100, "Trying")
        contact = f"<sip:pbx@{self.address[0]}:{self.address[1]}>" if method == b"INVITE" else None
        return response(data, 200, "OK", to_tag=f"r{RUN}", contact=contact)

    def requests(self, *, exclude_options: bool = False) -> list[bytes]:
        """Requests received (responses left out), in arrival order."""
        with self._lock:
            items = [d for d, _ in self.datagrams if status_of(d) is None]
        if exclude_options:
            items = [d for d in items if not d.startswith(b"OPTIONS ")]
        return items

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()

    def __enter__(self) -> UdpRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def response(
    request: bytes, code: int, reason: str, *, to_tag: str | None = None, contact: str | None = None
) -> bytes:
    """A response copying Via, From, To, Call-ID and CSeq of ``request`` (To tag added; a
    Contact, for a 2xx that sets up a dialog)."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = {b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}
    lines = [f"SIP/2.0 {code} {reason}".encode()]
    for line in head:
        name = line.partition(b":")[0].strip().lower()
        if name not in keep:
            continue
        if name in (b"to", b"t") and to_tag and code > 100 and b";tag=" not in line:
            line += f";tag={to_tag}".encode()
        lines.append(line)
    if contact is not None:
        lines.append(f"Contact: {contact}".encode())
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


# --- TCP --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamReport:
    attempted: int
    connected: int
    failed: int  # refused or reset while connecting
    never_connected: int  # still connecting when the run ended (backlog full)
    closed_after: list[float] = field(default_factory=list)  # seconds from connect to peer close
    alive: int = 0  # connections still open, by our reckoning, at the end
    bytes_sent: int = 0
    elapsed: float = 0.0

    @property
    def closed(self) -> int:
        return len(self.closed_after)

    def describe(self) -> str:
        lives = sorted(self.closed_after)
        spread = (
            f" closed after {lives[0]:.1f}-{lives[-1]:.1f} s (median {lives[len(lives) // 2]:.1f})"
            if lives
            else ""
        )
        return (
            f"{self.attempted} attempted, {self.connected} connected, {self.failed} failed, "
            f"{self.never_connected} never connected, {self.closed} closed by the peer, "
            f"{self.alive} alive at the end, {self.bytes_sent} bytes sent "
            f"in {self.elapsed:.1f} s{spread}"
        )


class _Conn:
    __slots__ = ("closed_at", "connected_at", "drip_at", "drip_pos", "pending", "sock", "started")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.started = now
        self.connected_at: float | None = None
        self.closed_at: float | None = None
        self.pending = bytearray()
        self.drip_pos = 0
        self.drip_at = 0.0


def tcp_attack(
    target: Address,
    *,
    sources: Sequence[str],
    per_source: int,
    duration: float,
    first: bytes = b"",
    drip: bytes = b"",
    drip_every: float = 1.0,
    drip_size: int = 1,
    connect_over: float = 0.5,
) -> StreamReport:
    """Open ``per_source`` connections from each source host (spread over ``connect_over``
    seconds), send ``first`` at once and then ``drip`` ``drip_size`` bytes every ``drip_every``
    seconds, and watch which connections the peer closes; everything is closed after
    ``duration`` seconds."""
    loopback(target)
    for host in sources:
        loopback((host, 0))
    sel = selectors.DefaultSelector()
    conns: list[_Conn] = []
    drips: list[tuple[float, int]] = []
    report = StreamReport(attempted=0, connected=0, failed=0, never_connected=0)
    start = time.monotonic()
    plan = [host for _ in range(per_source) for host in sources]
    opened = 0

    def close(index: int, now: float, *, by_peer: bool) -> None:
        conn = conns[index]
        if conn.closed_at is not None:
            return
        conn.closed_at = now
        sel.unregister(conn.sock)
        conn.sock.close()
        if by_peer and conn.connected_at is not None:
            report.closed_after.append(now - conn.connected_at)
        elif by_peer:
            report.failed += 1

    def want(index: int) -> None:
        conn = conns[index]
        events = selectors.EVENT_READ
        if conn.connected_at is None or conn.pending:
            events |= selectors.EVENT_WRITE
        sel.modify(conn.sock, events, index)

    try:
        while (now := time.monotonic()) - start < duration:
            due = len(plan) if connect_over <= 0 else int(len(plan) * (now - start) / connect_over)
            while opened < min(due + 1, len(plan)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.bind((plan[opened], 0))
                    code = sock.connect_ex(target)
                except OSError:
                    code = errno.EADDRNOTAVAIL
                report.attempted += 1
                opened += 1
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    report.failed += 1
                    continue
                conns.append(_Conn(sock, now))
                sel.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, len(conns) - 1)
            for key, events in sel.select(0.01):
                _stream_event(
                    key.data, events, conns, drips, first, drip_every, report, close, want
                )
            now = time.monotonic()
            while drips and drips[0][0] <= now:
                _, index = heapq.heappop(drips)
                conn = conns[index]
                if conn.closed_at is not None or conn.drip_pos >= len(drip):
                    continue
                conn.pending += drip[conn.drip_pos : conn.drip_pos + drip_size]
                conn.drip_pos += drip_size
                want(index)
                if conn.drip_pos < len(drip):
                    heapq.heappush(drips, (now + drip_every, index))
    finally:
        for conn in conns:
            if conn.closed_at is None:
                if conn.connected_at is None:
                    report.never_connected += 1
                else:
                    report.alive += 1
                conn.sock.close()
        sel.close()
        report.elapsed = time.monotonic() - start
    return report


def _stream_event(
    index: int,
    events: int,
    conns: list[_Conn],
    drips: list[tuple[float, int]],
    first: bytes,
    drip_every: float,
    report: StreamReport,
    close: Callable[..., None],
    want: Callable[[int], None],
) -> None:
    conn = conns[index]
    now = time.monotonic()
    if conn.connected_at is None:
        if not events & selectors.EVENT_WRITE:
            if events & selectors.EVENT_READ:  # refused before writable
                close(index, now, by_peer=True)
            return
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            close(index, now, by_peer=True)
            return
        conn.connected_at = now
        report.connected += 1
        conn.pending += first
        heapq.heappush(drips, (now + drip_every, index))
        want(index)
        return
    if events & selectors.EVENT_READ:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            data = b"x"
        except OSError:
            data = b""
        if not data:
            close(index, now, by_peer=True)
            return
    if events & selectors.EVENT_WRITE and conn.pending:
        try:
            sent = conn.sock.send(conn.pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            close(index, now, by_peer=True)
            return
        del conn.pending[:sent]
        report.bytes_sent += sent
        want(index)


def tcp_hog(
    target: Address, *, sources: Sequence[str], per_source: int, duration: float
) -> StreamReport:
    """Idle connections, held until ``duration`` ends."""
    return tcp_attack(target, sources=sources, per_source=per_source, duration=duration)


PAD = 300  # bytes of one padding header line: 60 KB stays under max_headers (256 lines)


def _invite_head(target: Address, pad_lines: int = 0, content_length: int | None = None) -> bytes:
    host, port = target
    lines = [
        f"INVITE sip:slow@{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-slow-{RUN}",
        "Max-Forwards: 70",
        "From: <sip:slow@127.0.0.1>;tag=slow",
        f"To: <sip:slow@{host}:{port}>",
        f"Call-ID: slow-{RUN}",
        "CSeq: 1 INVITE",
        *(f"X-Pad-{i}: " + "a" * PAD for i in range(pad_lines)),
    ]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n").encode()


def slowloris(
    target: Address,
    *,
    sources: Sequence[str],
    per_source: int,
    duration: float,
    every: float = 1.0,
) -> StreamReport:
    """A header block sent one byte every ``every`` seconds, never finished in time."""
    return tcp_attack(
        target,
        sources=sources,
        per_source=per_source,
        duration=duration,
        first=b"I",
        drip=_invite_head(target)[1:],
        drip_every=every,
    )


def half_sent_headers(
    target: Address,
    *,
    sources: Sequence[str],
    per_source: int,
    duration: float,
    size: int = 60_000,
) -> StreamReport:
    """About ``size`` bytes of header lines (each well under the line limit), never ended."""
    head = _invite_head(target, pad_lines=max(0, size // (PAD + 12)))
    return tcp_attack(target, sources=sources, per_source=per_source, duration=duration, first=head)


def slow_body(
    target: Address,
    *,
    sources: Sequence[str],
    per_source: int,
    duration: float,
    every: float = 0.5,
    body_size: int = 1000,
) -> StreamReport:
    """A whole header block at once, then the body one byte every ``every`` seconds."""
    head = _invite_head(target, content_length=body_size) + b"\r\n"
    return tcp_attack(
        target,
        sources=sources,
        per_source=per_source,
        duration=duration,
        first=head,
        drip=b"v" * body_size,
        drip_every=every,
    )


# --- processes ------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of process ``pid`` in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class RssSampler:
    """Samples ``rss_kib(pid)`` every ``every`` seconds in a thread, for at most ``lifetime``."""

    def __init__(self, pid: int, *, every: float = 0.1, lifetime: float = 60.0) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every, lifetime), daemon=True)
        self._thread.start()

    def _run(self, every: float, lifetime: float) -> None:
        deadline = time.monotonic() + lifetime
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.samples.append(rss_kib(self.pid))
            self._stop.wait(every)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(2.0)
        return self.samples


def established_inbound(pid: int, port: int) -> Counter[str]:
    """Established TCP connections that process ``pid`` holds on local ``port``, by peer IP
    (IPv4 only; read from /proc, so connections still in the listen backlog are not counted)."""
    inodes: set[str] = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return Counter()
    peers: Counter[str] = Counter()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return peers
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "01" or fields[9] not in inodes:
            continue
        local_port = int(fields[1].partition(":")[2], 16)
        if local_port != port:
            continue
        remote_hex = fields[2].partition(":")[0]
        peers[socket.inet_ntoa(bytes.fromhex(remote_hex)[::-1])] += 1
    return peers
