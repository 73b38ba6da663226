"""A scripted SIP user agent on a loopback UDP socket, with an RTP socket to match its SDP.

    phone = Phone("caller")                   # SIP and RTP sockets on free loopback ports
    call = phone.invite(siplb, "sip:bob@host:port", sdp=True)
    callee.expect("INVITE") ... callee.answer(request, 200, sdp=True)
    rtp = phone.rtp_peer(response)            # where the SDP it received says to send RTP
    phone.send_rtp(rtp, count=20); other.received_rtp(...)

A thread reads the SIP socket: OPTIONS (siplb's health probes) are answered 200 at once, every
other message is queued for ``expect``, which waits with a deadline. Nothing here sleeps a fixed
time. Only loopback (or a namespace address the test gives).
"""

from __future__ import annotations

import itertools
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from siplb.media.sdp import connection_addresses
from siplb.sip import ParseError, Request, Response, parse

_ids = itertools.count(1)
HOST = LOOPBACK_HOST = "127.0.0.1"


def media_port(body: bytes) -> int:
    """The port of the first ``m=`` line."""
    for line in body.splitlines():
        if line.startswith(b"m="):
            return int(line.split()[1])
    raise AssertionError(f"no m= line in {body!r}")


def media_address(body: bytes) -> tuple[str, int]:
    addresses = connection_addresses(body)
    assert addresses, f"no c= line in {body!r}"
    return addresses[-1], media_port(body)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_tag: str = ""
    remote_target: str = ""
    route_set: list[str] = field(default_factory=list)
    cseq: int = 1


class Phone:
    """A UA with one SIP socket and one RTP socket (its SDP names the RTP one)."""

    def __init__(
        self, name: str, host: str = HOST, *, sdp_host: str | None = None, port: int = 0
    ) -> None:
        self.name = name
        self.host = host
        self.sdp_host = sdp_host or host
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((host, port))
        self.port = self.sip.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((host, port + 2 if port else 0))
        self.rtp.settimeout(0.2)
        self.rtp_port = self.rtp.getsockname()[1]
        self.inbox: queue.Queue[tuple[Request | Response, tuple[str, int]]] = queue.Queue()
        self.options = 0
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def uri(self) -> str:
        return f"sip:{self.name}@{self.host}:{self.port}"

    def close(self) -> None:
        self._closed = True
        self.sip.close()
        self.rtp.close()

    # ---- the SIP socket --------------------------------------------------------------------------
    def _read(self) -> None:
        while not self._closed:
            try:
                data, addr = self.sip.recvfrom(65535)
            except OSError:
                return
            try:
                message = parse(data)
            except ParseError:
                continue
            if isinstance(message, Request) and message.method == "OPTIONS":
                self.options += 1
                self.send(self.response_to(message, 200), addr)
                continue
            self.inbox.put((message, addr))

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sip.sendto(data, to)

    def expect(
        self, what: str | int, timeout: float = 5.0, *, skip: tuple[int, ...] = (100,)
    ) -> tuple[Request | Response, tuple[str, int]]:
        """The next message that is ``what`` (a method or a status); others in between fail,
        except statuses in ``skip``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout} s")
            try:
                message, addr = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(message, Response) and message.status in skip and what != message.status:
                continue
            got: str | int = message.method if isinstance(message, Request) else message.status
            if got != what:
                raise AssertionError(f"{self.name}: expected {what}, got {message!r}")
            return message, addr

    def wait_probed(self, timeout: float = 10.0) -> None:
        """siplb's health probe reached us (a destination gets no call before)."""
        deadline = time.monotonic() + timeout
        while self.options == 0:
            assert time.monotonic() < deadline, f"{self.name}: never probed"
            time.sleep(0.02)

    # ---- building messages -------------------------------------------------------------------
    def sdp(self, version: int = 1) -> bytes:
        host = self.sdp_host.encode()
        return (
            b"v=0\r\no=%s 1 %d IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            b"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            % (self.name.encode(), version, host, host, self.rtp_port)
        )

    def via(self, branch: str | None = None) -> str:
        branch = branch or f"z9hG4bK{self.name}{next(_ids)}"
        return f"SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport"

    def invite(self, to: tuple[str, int], ruri: str, *, sdp: bool = True) -> tuple[Dialog, bytes]:
        dialog = Dialog(f"{self.name}-{next(_ids)}@test", f"t{next(_ids)}", self.uri, ruri)
        return dialog, self.request("INVITE", dialog, ruri, body=self.sdp() if sdp else b"")

    def request(
        self,
        method: str,
        dialog: Dialog,
        ruri: str,
        *,
        body: bytes = b"",
        cseq: int | None = None,
        via: str | None = None,
    ) -> bytes:
        lines = [f"{method} {ruri} SIP/2.0", f"Via: {via or self.via()}", "Max-Forwards: 70"]
        lines += [f"Route: {route}" for route in dialog.route_set]
        to = f"<{dialog.remote_uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
        lines += [
            f"From: <{dialog.local_uri}>;tag={dialog.local_tag}",
            f"To: {to}",
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {cseq if cseq is not None else dialog.cseq} {method}",
            f"Contact: <{self.uri}>",
        ]
        return _assemble(lines, body)

    def in_dialog(self, method: str, dialog: Dialog, *, body: bytes = b"") -> bytes:
        if method not in ("ACK", "CANCEL"):
            dialog.cseq += 1
        return self.request(method, dialog, dialog.remote_target, body=body)

    def response_to(
        self, request: Request, status: int, *, body: bytes = b"", tag: str | None = None
    ) -> bytes:
        lines = [f"SIP/2.0 {status} {REASONS.get(status, 'Whatever')}"]
        lines += [f"Via: {v.decode()}" for v in request.get_all(b"via")]
        if 100 < status < 300:
            lines += [f"Record-Route: {v.decode()}" for v in request.get_all(b"record-route")]
        to = (request.get(b"to") or b"").decode()
        if tag and status > 100 and ";tag=" not in to:
            to += f";tag={tag}"
        lines += [
            f"From: {(request.get(b'from') or b'').decode()}",
            f"To: {to}",
            f"Call-ID: {(request.call_id or b'').decode()}",
            f"CSeq: {(request.get(b'cseq') or b'').decode()}",
            f"Contact: <{self.uri}>",
        ]
        return _assemble(lines, body)

    def answer(
        self,
        request: Request,
        status: int,
        addr: tuple[str, int],
        *,
        body: bytes = b"",
        tag: str = "callee",
    ) -> None:
        self.send(self.response_to(request, status, body=body, tag=tag), addr)

    # ---- RTP ---------------------------------------------------------------------------------
    def send_rtp(self, to: tuple[str, int], count: int, ssrc: int) -> None:
        """``count`` RTP packets (PCMU, 20 ms of silence each), sequence numbers 1..count."""
        for seq in range(1, count + 1):
            header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc)
            self.rtp.sendto(header + b"\xff" * 160, to)

    def exchange_rtp(self, to: tuple[str, int], ssrc: int, other: int, seconds: float) -> set[int]:
        """Send an RTP packet every 20 ms for ``seconds`` while reading the other side's
        (``other``): the sequence numbers of those that arrived. Both at once, as a phone
        does, so an engine that learns a NATed phone's address from its RTP can answer it."""
        seen: set[int] = set()
        start = time.monotonic()
        end = start + seconds
        seq = 0
        while (now := time.monotonic()) < end:
            if now >= start + seq * 0.02:  # paced by the clock, not by what arrives
                seq += 1
                header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc)
                self.rtp.sendto(header + b"\xff" * 160, to)
            self.rtp.settimeout(max(0.001, min(0.02, start + seq * 0.02 - now)))
            try:
                data, _ = self.rtp.recvfrom(2048)
            except TimeoutError:
                continue
            if len(data) >= 12 and struct.unpack("!I", data[8:12])[0] == other:
                seen.add(struct.unpack("!H", data[2:4])[0])
        return seen

    def received_rtp(self, ssrc: int, want: int, timeout: float = 3.0) -> set[int]:
        """Sequence numbers of RTP packets of ``ssrc`` that reached the RTP socket, read until
        ``want`` of them came or ``timeout`` passed."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < want and time.monotonic() < deadline:
            try:
                data, _ = self.rtp.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                break
            if len(data) >= 12:
                _, _, seq, _, got = struct.unpack("!BBHII", data[:12])
                if got == ssrc:
                    seen.add(seq)
        return seen


REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    486: "Busy Here",
    487: "Request Terminated",
}


def _assemble(lines: list[str], body: bytes) -> bytes:
    if body:
        lines = [*lines, "Content-Type: application/sdp"]
    lines = [*lines, f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def learn_dialog(dialog: Dialog, response: Response) -> None:
    """A caller's dialog from a 2xx (RFC 3261 12.1.2): remote tag, target, route set."""
    dialog.remote_tag = (response.to_tag or b"").decode()
    contact = (response.get(b"contact") or b"").decode().strip("<>")
    dialog.remote_target = contact
    dialog.route_set = [v.decode() for v in reversed(response.values(b"record-route"))]


def callee_dialog(request: Request, tag: str, phone: Phone) -> Dialog:
    """The callee's side of the dialog an INVITE opened (RFC 3261 12.1.1)."""
    from_ = (request.get(b"from") or b"").decode()
    return Dialog(
        (request.call_id or b"").decode(),
        tag,
        phone.uri,
        from_.split("<", 1)[1].split(">", 1)[0],
        remote_tag=(request.from_tag or b"").decode(),
        remote_target=(request.get(b"contact") or b"").decode().strip("<>"),
        route_set=[v.decode() for v in request.values(b"record-route")],
    )
