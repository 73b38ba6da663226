"""The demo caller: a UDP user agent client placing calls through the balancer at a steady rate.

Each call is one task (RFC 3261 sections 13, 15, 17.1, 9.1):

    INVITE with SDP   retransmitted from T1, doubling, until a provisional response (Timer A);
                      no response at all in 64*T1 is a failure (Timer B)
    2xx               ACK routed by the Record-Route set (Route, Request-URI = Contact), then
                      the call is held (a random time) and ended by a BYE along the same route
    3xx-6xx           ACK (same branch), the call failed in setup
    CANCEL            on purpose in one call in ten, 0.3 s after its 180; also when the
                      caller stops, or when a call rings for RING_LIMIT without an answer; the
                      INVITE then ends with 487, or after 64*T1 without a final response
    BYE               retransmitted from T1, doubling up to T2 (Timer E), 64*T1 at most (F)

Every call ends as a ``CallRecord``: what happened and which demo PBX it reached, if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from collections.abc import Callable
from typing import Final

from siplb.sip import ParseError, Request, Response

from .call import Call, CallRecord, InviteClient, Outcome
from .wire import (
    T1,
    T2,
    TIMER_B,
    TRANSACTION_LINGER,
    Address,
    SipSocket,
    branch_of,
    new_branch,
    new_tag,
    sdp,
)

MAX_IN_FLIGHT: Final = 1000  # calls at once; beyond it the caller skips a beat
RECORDS_KEPT: Final = 100_000


class DemoCaller:
    def __init__(
        self,
        target: Address,
        *,
        cps: float,
        hold: tuple[float, float] = (2.0, 8.0),
        cancel_ratio: float = 0.1,
        rng: random.Random | None = None,
        on_record: Callable[[CallRecord], None] | None = None,
    ) -> None:
        self.target = target
        self.cps = cps
        self.hold = hold
        self.cancel_ratio = cancel_ratio
        self.records: deque[CallRecord] = deque(maxlen=RECORDS_KEPT)  # the latest ones
        self.on_record = on_record
        self.placed = 0
        self.answered = 0
        # calls given up while stopping, cancelled but with no final response, by demo PBX:
        # the balancer still waits for that response (64*T1 after its CANCEL, RFC 3261 9.1)
        self.given_up: Counter[str] = Counter()
        self._rng = rng or random.Random()
        self._socket: SipSocket | None = None
        self._calls: dict[bytes, Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._placing: asyncio.Task[None] | None = None
        self._recent_acks: dict[bytes, bytes] = {}

    # ---- live counts ---------------------------------------------------------------------
    @property
    def in_call(self) -> int:
        """Answered calls not yet hung up: the balancer counts them too."""
        return sum(1 for call in self._calls.values() if call.answered and not call.bye_sent)

    @property
    def hanging_up(self) -> int:
        """Calls whose BYE waits for its answer: the balancer no longer counts them."""
        return sum(1 for call in self._calls.values() if call.bye_sent)

    @property
    def setting_up(self) -> int:
        return sum(1 for call in self._calls.values() if not call.answered)

    # ---- start and stop ------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1") -> None:
        self._socket = await SipSocket.bind(host, 0, self._receive)
        self._placing = asyncio.create_task(self._place_calls())

    def stop_placing(self) -> None:
        if self._placing is not None:
            self._placing.cancel()

    async def stop(self, grace: float) -> None:
        """No new calls; hang up (BYE) or cancel the rest; wait up to ``grace`` for them."""
        self.stop_placing()
        if self._placing is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._placing
        for call in self._calls.values():
            call.hangup = True
            call.wake()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._socket is not None:
            self._socket.close()

    async def _place_calls(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.cps
        next_at = loop.time()
        while True:
            if len(self._calls) < MAX_IN_FLIGHT:  # else skip a beat
                self._new_call()
            next_at = max(next_at + interval, loop.time() - 1.0)  # catch up one second at most
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _new_call(self) -> None:
        assert self._socket is not None
        loop = asyncio.get_running_loop()
        self.placed += 1
        number = 1000 + self.placed % 9000
        host, port = self.target
        me = "{}:{}".format(*self._socket.address)
        call_id = f"{new_tag()}{new_tag()}@siplb-demo"
        body = sdp("caller", self._socket.address[0], 30000 + 2 * (self.placed % 10000))
        invite = Request.build(
            "INVITE",
            f"sip:{number}@{host}:{port}".encode("ascii"),
            [
                (b"Via", f"SIP/2.0/UDP {me};branch={new_branch()};rport".encode("ascii")),
                (b"Max-Forwards", b"70"),
                (b"From", f'"demo caller" <sip:caller@{me}>;tag={new_tag()}'.encode("ascii")),
                (b"To", f"<sip:{number}@{host}:{port}>".encode("ascii")),
                (b"Call-ID", call_id.encode("ascii")),
                (b"CSeq", b"1 INVITE"),
                (b"Contact", f"<sip:caller@{me}>".encode("ascii")),
                (b"User-Agent", b"siplb-demo-caller"),
                (b"Content-Type", b"application/sdp"),
                (b"Content-Length", str(len(body)).encode("ascii")),
            ],
            body,
        )
        call = Call(call_id, invite, loop.time())
        call.cancel_on_ring = self._rng.random() < self.cancel_ratio
        self._calls[call_id.encode("ascii")] = call
        task = asyncio.create_task(self._run(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- one call ------------------------------------------------------------------------
    async def _run(self, call: Call) -> None:
        try:
            if await self._setup(call):
                await self._hold(call)
                await self._bye(call)
        except Exception as exc:  # a bug here: the call counts as failed, and says why
            call.end(Outcome.UNFINISHED, f"error in the demo caller: {exc!r}")
        finally:
            key = call.call_id.encode("ascii")
            self._calls.pop(key, None)
            if call.ack is not None:
                self._linger(key, call.ack)
            now = asyncio.get_running_loop().time()
            record = CallRecord(
                call.call_id, call.pbx, call.started, now, call.answered, call.outcome, call.detail
            )
            self.records.append(record)
            if self.on_record is not None:
                self.on_record(record)

    async def _setup(self, call: Call) -> bool:
        """Until the INVITE's final response, or giving up; True when answered."""
        loop = asyncio.get_running_loop()
        client = InviteClient(call, loop.time())
        while True:
            for data in client.on_timer(loop.time()):
                self._send(data, self.target)
            if client.failure is not None:
                call.end(Outcome.SETUP_FAILED, client.failure)
                if call.hangup and client.cancel is not None:
                    self.given_up[call.pbx or "?"] += 1
                return False
            response = await _next(call, client.wake_at())
            final = None if response is None else client.on_response(response, loop.time())
            if final is not None:
                return self._final(call, final, client.why_cancel if client.cancel else "")

    def _final(self, call: Call, response: Response, why_cancel: str) -> bool:
        status = response.status
        if status < 300:
            call.take_answer(response)
            self.answered += 1
            call.ack = call.dialog_request("ACK", 1, self._sent_by).to_bytes()
            self._send(call.ack, call.next_hop(self.target))
            return True
        call.ack = call.non_2xx_ack(response).to_bytes()
        self._send(call.ack, self.target)
        reason = f"{status} {response.reason.decode('latin-1')}"
        if status == 487 and why_cancel in ("on purpose", "at exit"):
            call.end(Outcome.CANCELLED, why_cancel)
        elif status == 487:
            call.end(Outcome.SETUP_FAILED, f"{reason} ({why_cancel})")
        else:
            call.end(Outcome.SETUP_FAILED, reason)
        return False

    async def _hold(self, call: Call) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + self._rng.uniform(*self.hold)
        while not call.hangup and loop.time() < until:
            await _next(call, until)  # 2xx retransmissions are ACKed by the receiver

    async def _bye(self, call: Call) -> None:
        """A non-INVITE client transaction (17.1.2): Timer E from T1 up to T2, Timer F."""
        loop = asyncio.get_running_loop()
        bye = call.dialog_request("BYE", 2, self._sent_by)
        data = bye.to_bytes()
        branch = branch_of(bye)
        hop = call.next_hop(self.target)
        self._send(data, hop)
        call.bye_sent = True
        now = loop.time()
        retransmit_at, interval, give_up_at = now + T1, T1, now + TIMER_B
        while True:
            now = loop.time()
            if now >= give_up_at:
                call.end(Outcome.DROPPED, "no response to BYE")
                return
            if retransmit_at <= now:
                self._send(data, hop)
                interval = min(2 * interval, T2)
                retransmit_at = now + interval
            response = await _next(call, min(retransmit_at, give_up_at))
            if response is None or branch_of(response) != branch:
                continue
            if response.cseq.method != "BYE":
                continue
            if response.status < 200:
                interval = T2
                continue
            if response.status < 300:
                call.end(Outcome.COMPLETED, "BYE answered")
            else:
                reason = response.reason.decode("latin-1")
                call.end(Outcome.DROPPED, f"{response.status} {reason} on BYE")
            return

    # ---- the socket ----------------------------------------------------------------------
    def _receive(self, message: Request | Response, peer: Address) -> None:
        if isinstance(message, Request):
            return  # nothing calls the demo caller
        call_id = message.call_id or b""
        try:
            final_to_invite = message.status >= 200 and message.cseq.method == "INVITE"
        except ParseError:
            return
        call = self._calls.get(call_id)
        ack = call.ack if call is not None else self._recent_acks.get(call_id)
        if final_to_invite and ack is not None:  # the final response again: the ACK again
            hop = call.next_hop(self.target) if call is not None and call.answered else self.target
            self._send(ack, hop)
        elif call is not None:
            call.queue.put_nowait(message)

    @property
    def _sent_by(self) -> str:
        assert self._socket is not None
        return "{}:{}".format(*self._socket.address)

    def _send(self, data: bytes, addr: Address) -> None:
        if self._socket is not None:
            self._socket.send(data, addr)

    def _linger(self, call_id: bytes, ack: bytes) -> None:
        self._recent_acks[call_id] = ack
        loop = asyncio.get_running_loop()
        loop.call_later(TRANSACTION_LINGER, self._recent_acks.pop, call_id, None)


async def _next(call: Call, until: float) -> Response | None:
    """The call's next response, or None at ``until`` or when the call is woken up."""
    timeout = until - asyncio.get_running_loop().time()
    if timeout <= 0:
        await asyncio.sleep(0)  # never a loop that does not yield
        return None
    try:
        return await asyncio.wait_for(call.queue.get(), timeout)
    except TimeoutError:
        return None
