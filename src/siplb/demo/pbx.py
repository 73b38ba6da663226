"""A demo PBX: a small UDP user agent server that answers like a PBX taking every call.

    OPTIONS            200
    INVITE             100 at once, 180 Ringing, 200 with SDP after a short ring
                       (Record-Route echoed, a To tag, a Contact naming the PBX)
    ACK                absorbed (for the 2xx, and hop by hop for a 487)
    BYE                200 for a dialog it knows, 481 for one it does not
    CANCEL             200, then 487 for the INVITE still ringing (RFC 3261 9.2)
    anything else      405

A request seen again (same branch and method) gets the last response sent for it again. ``stop``
makes the PBX behave like a crashed one: it answers nothing, and what it knew (ringing calls,
dialogs) is gone when ``start_answering`` brings it back, so a BYE for an older call gets 481.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from siplb.sip import Request, Response

from .wire import TRANSACTION_LINGER, Address, SipSocket, branch_of, new_tag, sdp

ALLOW = b"INVITE, ACK, CANCEL, BYE, OPTIONS"
DIALOG_MAX_AGE = 600.0  # a dialog whose BYE never came is forgotten after this
REASONS = {
    100: b"Trying",
    180: b"Ringing",
    200: b"OK",
    405: b"Method Not Allowed",
    481: b"Call/Transaction Does Not Exist",
    487: b"Request Terminated",
}


@dataclass(frozen=True, slots=True)
class Outage:
    """The PBX answered nothing from ``start`` to ``end`` (loop time; ``None``: still down)."""

    start: float
    end: float | None

    def overlaps(self, start: float, end: float) -> bool:
        return self.start <= end and (self.end is None or self.end >= start)


class _Ringing:
    """An INVITE server transaction before its final response."""

    __slots__ = ("peer", "request", "timers", "to_tag")

    def __init__(self, request: Request, peer: Address, to_tag: str) -> None:
        self.request = request
        self.peer = peer
        self.to_tag = to_tag
        self.timers: list[asyncio.TimerHandle] = []


class DemoPbx:
    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        ring: tuple[float, float] = (0.6, 1.5),
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.ring = ring
        self.answering = True
        self.outages: list[Outage] = []
        self.calls_answered = 0
        self._rng = rng or random.Random()
        self._socket: SipSocket | None = None
        self._ringing: dict[str, _Ringing] = {}  # INVITE branch -> transaction
        self._answered: dict[tuple[str, str], bytes] = {}  # (branch, method) -> last response
        self._dialogs: dict[bytes, float] = {}  # Call-ID -> when it was answered
        self._expiry: dict[tuple[str, str], asyncio.TimerHandle] = {}

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @property
    def active_calls(self) -> int:
        """Calls ringing, and answered but not yet ended by a BYE (what the PBX would show)."""
        return len(self._ringing) + len(self._dialogs)

    async def start(self) -> None:
        self._socket = await SipSocket.bind(self.host, self.port, self._receive)
        self.port = self._socket.address[1]  # the one the system chose for port 0

    def close(self) -> None:
        self._crash()
        if self._socket is not None:
            self._socket.close()

    # ---- the demo's script ---------------------------------------------------------------
    def stop_answering(self, now: float) -> None:
        """Behave like a crashed PBX: no answer to anything, every call in progress lost."""
        if self.answering:
            self.answering = False
            self.outages.append(Outage(now, None))
            self._crash()

    def start_answering(self, now: float) -> None:
        """Come back like a restarted PBX: answering again, knowing no calls."""
        if not self.answering:
            self.answering = True
            self.outages[-1] = Outage(self.outages[-1].start, now)

    def was_down_during(self, start: float, end: float) -> bool:
        return any(outage.overlaps(start, end) for outage in self.outages)

    def _crash(self) -> None:
        for ringing in self._ringing.values():
            for timer in ringing.timers:
                timer.cancel()
        for timer in self._expiry.values():
            timer.cancel()
        self._ringing.clear()
        self._answered.clear()
        self._dialogs.clear()
        self._expiry.clear()

    # ---- requests ------------------------------------------------------------------------
    def _receive(self, message: Request | Response, peer: Address) -> None:
        if not self.answering or not isinstance(message, Request):
            return
        branch = branch_of(message)
        if branch is None:
            return
        method = message.method
        if method == "ACK":
            return  # for our 2xx (end to end) or our 487 (hop by hop): nothing to do
        last = self._answered.get((branch, method))
        if last is not None:  # a retransmission (RFC 3261 17.2.1, 17.2.2)
            self._send(last, peer)
            return
        ringing = self._ringing.get(branch) if method == "INVITE" else None
        if ringing is not None:
            response = self._response(message, 180, to_tag=ringing.to_tag, dialog=True)
            self._send(response, peer)
            return
        handler = _HANDLERS.get(method, DemoPbx._on_other)
        handler(self, message, branch, peer)

    def _on_options(self, request: Request, branch: str, peer: Address) -> None:
        extra = [(b"Allow", ALLOW), (b"Accept", b"application/sdp")]
        self._final(request, branch, peer, self._response(request, 200, extra=extra))

    def _on_invite(self, request: Request, branch: str, peer: Address) -> None:
        loop = asyncio.get_running_loop()
        ringing = _Ringing(request, peer, new_tag())
        self._ringing[branch] = ringing
        # 100 and 180 together: whoever saw the PBX answer also learns which PBX it was
        self._send(self._response(request, 100), peer)
        self._send(self._response(request, 180, to_tag=ringing.to_tag, dialog=True), peer)
        ringing.timers = [loop.call_later(self._rng.uniform(*self.ring), self._answer, branch)]

    def _answer(self, branch: str) -> None:
        ringing = self._ringing.pop(branch, None)
        if ringing is None:
            return
        request = ringing.request
        body = sdp(self.name, self.host, 40000 + 2 * (self.calls_answered % 10000))
        response = self._response(request, 200, to_tag=ringing.to_tag, dialog=True, body=body)
        self.calls_answered += 1
        call_id = request.call_id or b""
        self._dialogs[call_id] = asyncio.get_running_loop().time()
        self._final(request, branch, ringing.peer, response)
        self._prune_dialogs()

    def _on_cancel(self, request: Request, branch: str, peer: Address) -> None:
        ringing = self._ringing.pop(branch, None)
        known = ringing is not None or (branch, "INVITE") in self._answered
        self._final(request, branch, peer, self._response(request, 200 if known else 481))
        if ringing is not None:  # RFC 3261 9.2: the INVITE ends with 487
            for timer in ringing.timers:
                timer.cancel()
            invite = ringing.request
            response = self._response(invite, 487, to_tag=ringing.to_tag)
            self._final(invite, branch, ringing.peer, response)

    def _on_bye(self, request: Request, branch: str, peer: Address) -> None:
        known = self._dialogs.pop(request.call_id or b"", None) is not None
        self._final(request, branch, peer, self._response(request, 200 if known else 481))

    def _on_other(self, request: Request, branch: str, peer: Address) -> None:
        response = self._response(request, 405, extra=[(b"Allow", ALLOW)])
        self._final(request, branch, peer, response)

    # ---- responses -----------------------------------------------------------------------
    def _final(self, request: Request, branch: str, peer: Address, response: bytes) -> None:
        """Send a final response and keep it a while for retransmissions of the request."""
        key = (branch, request.method)
        self._answered[key] = response
        self._send(response, peer)
        old = self._expiry.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._expiry[key] = loop.call_later(TRANSACTION_LINGER, self._expire, key)

    def _expire(self, key: tuple[str, str]) -> None:
        self._answered.pop(key, None)
        self._expiry.pop(key, None)

    def _prune_dialogs(self) -> None:
        oldest = asyncio.get_running_loop().time() - DIALOG_MAX_AGE
        for call_id in [c for c, at in self._dialogs.items() if at < oldest]:
            del self._dialogs[call_id]

    def _response(
        self,
        request: Request,
        status: int,
        *,
        to_tag: str | None = None,
        dialog: bool = False,
        extra: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> bytes:
        """RFC 3261 8.2.6.2: Via, From, To, Call-ID and CSeq copied; 12.1.1 for a dialog."""
        headers = [(b"Via", via) for via in request.get_all(b"via")]
        if dialog:
            headers.extend((b"Record-Route", rr) for rr in request.get_all(b"record-route"))
        for name in (b"From", b"To", b"Call-ID", b"CSeq"):
            value = request.get(name)
            if value is None:
                continue
            if name == b"To" and status > 100 and request.to_tag is None:
                value += b";tag=" + (to_tag or new_tag()).encode("ascii")
            headers.append((name, value))
        if dialog:
            contact = f"<sip:{self.name}@{self.host}:{self.port}>".encode("ascii")
            headers.append((b"Contact", contact))
        headers.extend(extra or ())
        headers.append((b"Server", b"siplb-demo-pbx"))
        if body:
            headers.append((b"Content-Type", b"application/sdp"))
        headers.append((b"Content-Length", str(len(body)).encode("ascii")))
        return Response.build(status, REASONS.get(status, b"OK"), headers, body).to_bytes()

    def _send(self, data: bytes, peer: Address) -> None:
        if self._socket is not None and self.answering:
            self._socket.send(data, peer)


_HANDLERS = {
    "OPTIONS": DemoPbx._on_options,
    "INVITE": DemoPbx._on_invite,
    "CANCEL": DemoPbx._on_cancel,
    "BYE": DemoPbx._on_bye,
}
