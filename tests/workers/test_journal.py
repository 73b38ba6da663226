"""``workers = N``: the other workers' events in worker 0's journal (``Relay``, ``relayed``).

A batch crosses the channel as JSON, so each case sends it through ``encode_control`` and
``decode_control`` as the workers do.
"""

from __future__ import annotations

from typing import Any

from siplb.admin.journal import MAX_REASONS, OTHER, RELAY_LINES, Recorder, Relay
from siplb.io.workers import decode_control, encode_control
from siplb.proxy.actions import CallsExpired, FailedOver, MessageDropped, Target

SOURCE = Target("udp", "192.0.2.7", 5060)


def failover(n: int, uri: str = "sip:pbx1@192.0.2.10") -> FailedOver:
    return FailedOver(f"call-{n}", "pbx", uri, "503 Service Unavailable")


def crossed(relay: Relay, worker: int = 1) -> dict[str, Any]:
    """The batch as worker 0 receives it: encoded, sealed away, decoded."""
    batch = relay.take()
    assert batch is not None
    return decode_control(encode_control("journal", worker=worker, **batch))


def test_nothing_collected_sends_nothing() -> None:
    relay = Relay()
    relay.observe(MessageDropped("scanner", SOURCE), 1000.0)  # counted by the worker itself
    assert relay.take() is None


def test_a_failover_in_worker_1_is_an_entry_naming_it() -> None:
    relay = Relay()
    relay.observe(failover(1), 1000.25)
    recorder = Recorder(clock=lambda: 2000.0)
    recorder.relayed(1, crossed(relay))
    [entry] = recorder.journal.after(0)
    assert entry.kind == "failover"
    assert entry.worker == 1
    assert entry.at == 1000.25  # when it happened, not when it arrived
    assert "call call-1 left sip:pbx1@192.0.2.10" in entry.message
    assert "worker 1" in entry.message
    assert entry.to_json()["worker"] == 1
    assert recorder.failovers[("pbx", "sip:pbx1@192.0.2.10")] == 1
    assert relay.take() is None  # taken once


def test_a_flood_of_failovers_is_bounded_but_counted_in_full() -> None:
    relay = Relay()
    flood = RELAY_LINES * 50
    for n in range(flood):
        relay.observe(failover(n), 1000.0)
    batch = crossed(relay)
    assert len(batch["failovers"]) == RELAY_LINES
    assert batch["more"] == flood - RELAY_LINES
    assert relay.summed == flood - RELAY_LINES
    recorder = Recorder(clock=lambda: 2000.0)
    recorder.relayed(2, batch)
    entries = recorder.journal.after(0)
    assert len(entries) == RELAY_LINES + 1
    summed = entries[-1]
    assert summed.count == flood - RELAY_LINES
    assert summed.message == f"{flood - RELAY_LINES} more failovers in worker 2"
    assert recorder.failovers[("pbx", "sip:pbx1@192.0.2.10")] == flood  # the metric misses none


def test_destinations_past_the_label_cap_count_as_other() -> None:
    relay = Relay()
    for n in range(MAX_REASONS + 5):
        relay.observe(failover(n, uri=f"sip:pbx{n}@192.0.2.10"), 1000.0)
    batch = crossed(relay)
    assert len(batch["counts"]) == MAX_REASONS + 1
    assert [OTHER, OTHER, 5] in batch["counts"]


def test_expired_calls_are_summed_into_one_entry() -> None:
    relay = Relay()
    relay.observe(CallsExpired(3), 1000.0)
    relay.observe(CallsExpired(4), 1000.1)
    recorder = Recorder(clock=lambda: 2000.0)
    recorder.relayed(1, crossed(relay))
    [entry] = recorder.journal.after(0)
    assert entry.kind == "expired"
    assert entry.count == 7
    assert entry.message == "7 calls expired from the call table in worker 1"


def test_worker_0_takes_no_more_lines_than_a_batch_may_carry() -> None:
    """A batch longer than a relay makes (a newer or broken sender) is cut to the bound."""
    lines = [[1000.0, f"c{n}", "pbx", "sip:a@192.0.2.1", "timeout"] for n in range(500)]
    batch = {"failovers": lines, "counts": [], "more": 0, "expired": 0}
    recorder = Recorder(clock=lambda: 2000.0)
    recorder.relayed(1, batch)
    assert len(recorder.journal) == RELAY_LINES
