"""What a finished transaction keeps while it waits out its timers (RFC 6026 L and M, RFC 3261 D,
J, K), and that nothing of a call outlives its timers.

A transaction lingers 64*T1 (32 s) after its final response; at hundreds of calls a second that
is tens of thousands of them. Each keeps only what it may still send: the last response while
Completed (Timer G/J retransmissions), the ACK for a non-2xx (Timer D), nothing of the request
once Accepted (a 2xx retransmission is passed on through the server transaction).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from siplb.proxy.forwarding import Forwarding
from siplb.proxy.timers import COMPACT_SLACK, TimerHeap
from siplb.proxy.transaction import ClientTransaction, ServerTransaction, TxState

from .harness import UAC, Call, Lab, Script, make_lab


def answered_call(script: Script, *, auto_ack: bool = True) -> tuple[Lab, Call]:
    lab = make_lab([script], uac=UAC(auto_ack=auto_ack))
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    return lab, call


def invite_transactions(lab: Lab) -> tuple[ServerTransaction, ClientTransaction]:
    [server] = [t for t in lab.proxy.servers.values() if t.key[-1] == "INVITE"]
    [client] = [t for t in lab.proxy.clients.values() if t.method == "INVITE"]
    return server, client


# (destination script, the caller ACKs a non-2xx, server and client state, the server still
# holds its last response)
CASES = [
    (Script(invite=(180, 200)), True, TxState.ACCEPTED, TxState.ACCEPTED, False),
    (Script(invite=(180, 486)), False, TxState.COMPLETED, TxState.COMPLETED, True),  # Timer G
    (Script(invite=(180, 486)), True, TxState.CONFIRMED, TxState.COMPLETED, False),  # Timer I
]


@pytest.mark.parametrize(
    ("script", "auto_ack", "server_state", "client_state", "keeps_last"), CASES
)
def test_an_answered_invite_keeps_no_message(
    script: Script,
    auto_ack: bool,
    server_state: TxState,
    client_state: TxState,
    keeps_last: bool,
) -> None:
    lab, _ = answered_call(script, auto_ack=auto_ack)
    server, client = invite_transactions(lab)
    assert (server.state, client.state) == (server_state, client_state)
    assert server.request is None
    assert server.context is None
    assert (server._last is not None) is keeps_last  # a non-2xx final is ours to retransmit
    assert client.request is None
    assert client.data is None
    assert (client._ack is not None) is (client_state is TxState.COMPLETED)
    forwarding = client.user
    assert isinstance(forwarding, Forwarding)
    assert forwarding.done
    assert (forwarding.base, forwarding.best, forwarding.tried) == (None, None, frozenset())


def test_the_ack_for_a_repeated_final_is_the_same_ack() -> None:
    lab, call = answered_call(Script(invite=(486,)))
    lab.uas[0].retransmit_final(call.call_id)
    lab.net.run(2.0)
    first, second = [r.send.data for r in lab.uas[0].inbox if r.send.data.startswith(b"ACK ")]
    assert first == second


def test_a_2xx_retransmission_still_goes_upstream_after_the_request_is_gone() -> None:
    lab, call = answered_call(Script(invite=(180, 200)))
    server, _ = invite_transactions(lab)
    assert server.request is None
    lab.uas[0].retransmit_final(call.call_id)
    lab.net.run(2.0)
    assert call.statuses == [100, 180, 200, 200]


def test_a_call_leaves_nothing_for_the_cycle_collector() -> None:
    """Transactions and their response context point at each other while they work; when they
    end, the links are cut, so reference counting frees them at once (no garbage piles up for
    the cycle collector, whose full collections pause the process)."""
    gc.collect()
    gc.disable()  # no automatic collection may free a cycle before it is looked for
    try:
        lab = make_lab(2)
        call = lab.uac.call()
        call.invite()
        lab.net.run(1.0)
        call.ack()
        lab.net.run(2.0)
        call.bye()
        lab.net.run(60.0)
        assert lab.proxy.transactions == 0
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, ServerTransaction | ClientTransaction)]
        left += [o for o in gc.garbage if isinstance(o, Forwarding)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


def test_no_timer_far_ahead_outlives_the_call() -> None:
    """Timer C (setup_timeout) is armed by a 180; the 200 makes it moot: no heap entry may hold
    the finished transaction until then."""
    lab, _ = answered_call(Script(invite=(180, 200)))
    deadlines = [when for when, _, _ in lab.proxy.heap._heap]
    assert deadlines
    assert max(deadlines) <= lab.net.clock.now + 32.0


class _Timed:
    __slots__ = ("deadline", "fired")

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired: list[float] = []

    def on_timer(self, now: float) -> None:
        self.fired.append(now)


def _many(n: int) -> Iterator[_Timed]:
    return (_Timed() for _ in range(n))


def test_the_heap_sheds_stale_entries() -> None:
    heap = TimerHeap()
    kept = list(_many(10))
    for i, obj in enumerate(kept):
        heap.schedule(obj, 100.0 + i)
    for obj in _many(5 * COMPACT_SLACK):  # scheduled far ahead, then cancelled
        heap.schedule(obj, 1000.0)
        heap.schedule(obj, None)
    assert len(heap) <= 2 * len(kept) + COMPACT_SLACK + 1
    heap.run_due(2000.0)
    assert [obj.fired for obj in kept] == [[2000.0]] * len(kept)
    assert heap.next_deadline() is None


def test_a_moved_deadline_fires_once_at_its_new_time() -> None:
    heap = TimerHeap()
    obj = _Timed()
    heap.schedule(obj, 5.0)
    heap.schedule(obj, 5.0)  # the same deadline again: one entry
    heap.schedule(obj, 3.0)
    assert len(heap) == 2
    heap.run_due(10.0)
    assert obj.fired == [10.0]
