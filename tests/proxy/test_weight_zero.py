"""Weight 0 (the LVS way to quiesce a destination): no new call from its set, while its calls
in progress go on to their end (in-dialog requests follow their route, not the set)."""

from __future__ import annotations

from dataclasses import replace

from siplb.dispatch import SetSpec

from .harness import Call, Lab, make_lab


def start_call(lab: Lab) -> Call:
    call = lab.uac.call()
    call.invite()
    lab.net.run(lab.clock.now + 0.5)
    assert call.statuses[-1] == 200
    call.ack()
    return call


def reweight(lab: Lab, index: int, weight: int) -> None:
    [spec] = lab.proxy.dispatcher.sets()
    dests = tuple(
        replace(d, weight=weight) if d.uri == lab.uri(index) else d for d in spec.destinations
    )
    lab.proxy.reconfigure(
        sets=[SetSpec(spec.name, dests, spec.algorithm)],
        routes=[],
        default_set=spec.name,
        now=lab.clock.now,
    )


def test_weight_0_drains_and_a_weight_above_0_puts_back() -> None:
    lab = make_lab(2)
    first = start_call(lab)
    assert (lab.active(0), lab.active(1)) == (1, 0)
    reweight(lab, 0, 0)
    for _ in range(4):  # new calls: all to the other one
        start_call(lab)
    assert (lab.active(0), lab.active(1)) == (1, 4)
    # the call in progress ends normally on the quiesced destination
    first.bye()
    lab.net.run(lab.clock.now + 1.0)
    assert [r.status for r in first.responses_to("BYE")] == [200]
    assert lab.active(0) == 0
    assert lab.state(0) == "up"  # its health is not touched
    reweight(lab, 0, 1)
    start_call(lab)
    start_call(lab)
    assert lab.active(0) >= 1
