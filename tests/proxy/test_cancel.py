"""CANCEL through the proxy (RFC 3261 9.1, 9.2, 16.10) and Timer C (16.8)."""

from __future__ import annotations

from siplb.settings import ProxySettings

from .harness import Call, Lab, Script, make_lab


def invite_then_cancel(lab: Lab, cancel_at: float) -> Call:
    call = lab.uac.call()
    call.invite()
    lab.net.run(cancel_at)
    call.cancel()
    return call


def cancel_statuses(call: Call) -> list[int]:
    return [r.status for r in call.responses_to("CANCEL")]


def test_cancel_before_any_provisional_waits_for_one() -> None:
    """9.1: no CANCEL before a provisional response; it goes when the 180 arrives."""
    lab = make_lab([Script(invite=((180, 1.0), (200, 5.0)))])
    call = invite_then_cancel(lab, 0.2)
    lab.net.run(0.9)
    assert cancel_statuses(call) == [200]  # the caller's CANCEL is answered at once
    assert lab.uas[0].requests("CANCEL") == []
    lab.net.run(10.0)
    [cancel] = lab.uas[0].requests("CANCEL")
    assert lab.uas[0].arrivals("CANCEL") == [1.0]
    assert cancel.vias()[0].branch == lab.uas[0].invites[0].vias()[0].branch
    assert call.statuses[-1] == 487
    assert 200 not in call.statuses
    assert lab.active(0) == 0


def test_cancel_of_a_silent_destination_gives_487_without_failover() -> None:
    lab = make_lab([Script(invite=()), Script()])
    call = invite_then_cancel(lab, 0.2)
    lab.net.run(10.0)
    assert call.statuses == [100, 487]
    assert lab.uac.finals("INVITE") == [(2.0, 487)]  # when the attempt times out
    assert lab.uas[0].requests("CANCEL") == []
    assert lab.uas[1].inbox == []
    assert lab.active(0) == 0


def test_cancel_after_180_is_forwarded_and_the_487_comes_back() -> None:
    lab = make_lab([Script(invite=(180, (200, 5.0)))])
    call = invite_then_cancel(lab, 1.0)
    lab.net.run(1.0)
    assert cancel_statuses(call) == [200]
    [invite] = lab.uas[0].invites
    [cancel] = lab.uas[0].requests("CANCEL")
    # 9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via branch as the INVITE
    assert cancel.uri == invite.uri
    assert cancel.vias()[0].branch == invite.vias()[0].branch
    assert len(cancel.vias()) == 1
    assert cancel.cseq.number == invite.cseq.number
    for name in (b"from", b"to", b"call-id"):
        assert cancel.get(name) == invite.get(name)
    assert call.statuses == [100, 180, 487]
    # the 487 is ACKed hop by hop on both sides: by us towards the UAS, by the caller to us
    [ack] = lab.uas[0].requests("ACK")
    assert ack.vias()[0].branch == invite.vias()[0].branch
    assert ack.cseq.method == "ACK"
    branch = (invite.vias()[0].branch or "").encode()
    assert ack.to_tag == lab.uas[0].transactions[(branch, "INVITE")].to_tag
    assert lab.proxy.stats["retransmissions"] == 0
    assert lab.active(0) == 0
    lab.net.run(60.0)
    assert lab.proxy.transactions == 0
    assert len(lab.uas[0].requests("ACK")) == 1  # the caller's ACK stopped at the proxy


def test_cancel_retransmission_repeats_the_200() -> None:
    lab = make_lab([Script(invite=(180, (200, 5.0)))])
    call = invite_then_cancel(lab, 1.0)
    lab.net.run(1.2)
    call.cancel()
    lab.net.run(1.5)
    assert cancel_statuses(call) == [200, 200]
    assert len(lab.uas[0].requests("CANCEL")) == 1


def test_cancel_racing_the_200() -> None:
    """The UAS answered 200 just before our CANCEL reached it: the 200 wins, the call counts."""
    lab = make_lab([Script(invite=(180, (200, 1.0)))], latency=0.05)
    call = invite_then_cancel(lab, 1.01)
    lab.net.run(2.0)
    assert len(lab.uas[0].requests("CANCEL")) == 1
    assert call.statuses == [100, 180, 200]
    assert cancel_statuses(call) == [200]
    assert lab.active(0) == 1
    call.ack()
    call.bye()
    lab.net.run(3.0)
    assert [r.status for r in call.responses_to("BYE")] == [200]
    assert lab.active(0) == 0


def test_cancel_after_the_200_was_forwarded_is_not_sent_on() -> None:
    lab = make_lab(1)
    call = invite_then_cancel(lab, 0.5)
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]
    assert cancel_statuses(call) == [200]
    assert lab.uas[0].requests("CANCEL") == []
    assert lab.active(0) == 1


def test_cancel_matching_nothing_gets_481() -> None:
    lab = make_lab(1)
    call = lab.uac.call()
    call.cancel()  # no INVITE was ever sent
    lab.net.settle()
    assert cancel_statuses(call) == [481]
    assert lab.uas[0].inbox == []


def test_cancel_after_the_invite_transaction_ended_gets_481() -> None:
    lab = make_lab(1)
    call = lab.uac.call()
    call.invite()
    lab.net.run(40.0)  # Timer L ends the server transaction
    call.cancel()
    lab.net.run(41.0)
    assert cancel_statuses(call) == [481]


def test_timer_c_cancels_the_branch_and_answers_408() -> None:
    """16.8: no final response long after a provisional: CANCEL the branch, 408 upstream."""
    lab = make_lab([Script(invite=(180,))], settings=ProxySettings(setup_timeout=10.0))
    call = lab.uac.call()
    call.invite()
    lab.net.run(9.9)
    assert call.statuses == [100, 180]
    lab.net.run(10.0)
    assert call.statuses == [100, 180, 408]
    [cancel] = lab.uas[0].requests("CANCEL")
    assert cancel.vias()[0].branch == lab.uas[0].invites[0].vias()[0].branch
    # the INVITE branch lives on to take the UAS's 487, and ACKs it
    lab.net.run(60.0)
    assert len(lab.uas[0].requests("ACK")) == 1
    assert call.statuses == [100, 180, 408]
    assert lab.proxy.transactions == 0
    assert lab.active(0) == 0


def test_timer_c_restarts_with_every_provisional() -> None:
    script = Script(invite=(180, (183, 8.0)))
    lab = make_lab([script], settings=ProxySettings(setup_timeout=10.0))
    call = lab.uac.call()
    call.invite()
    lab.net.run(17.9)
    assert call.statuses == [100, 180, 183]
    lab.net.run(18.0)
    assert call.statuses == [100, 180, 183, 408]


def test_a_2xx_after_timer_c_still_reaches_the_caller() -> None:
    """16.7 step 9: a 2xx is forwarded even after we answered 408 upstream."""
    lab = make_lab(
        [Script(invite=(180,), cancel=False)], settings=ProxySettings(setup_timeout=10.0)
    )
    call = lab.uac.call()
    call.invite()
    lab.net.run(10.0)
    [txn] = [t for t in lab.uas[0].transactions.values() if t.request.method == "INVITE"]
    lab.net.at(10.5, lambda: lab.uas[0].answer(txn, 200))
    lab.net.run(11.0)
    assert call.statuses == [100, 180, 408, 200]
    lab.net.run(60.0)
    assert lab.proxy.transactions == 0


def test_a_cancelled_branch_that_never_answers_ends_after_64_t1() -> None:
    """9.1: no final response 64*T1 after our CANCEL: the branch counts as cancelled (487),
    the caller does not wait out Timer C and the call leaves the destination's count."""
    lab = make_lab([Script(invite=(180,), cancel=False)])
    call = invite_then_cancel(lab, 1.0)
    lab.net.run(1.0)
    assert len(lab.uas[0].requests("CANCEL")) == 1
    assert lab.active(0) == 1
    lab.net.run(60.0)
    assert lab.uac.finals("INVITE") == [(1.0 + 64 * 0.5, 487)]
    assert call.statuses[-1] == 487
    assert lab.active(0) == 0


def test_cancel_while_shutting_down_still_cancels() -> None:
    """A CANCEL follows its INVITE: it is never turned away as a new request would be."""
    lab = make_lab([Script(invite=(180, (200, 5.0)))])
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    lab.proxy.stop_accepting()
    call.cancel()
    lab.net.run(2.0)
    assert cancel_statuses(call) == [200]
    assert len(lab.uas[0].requests("CANCEL")) == 1
    assert call.statuses[-1] == 487


def test_cancel_takes_no_turn_of_the_round_robin() -> None:
    lab = make_lab([Script(invite=(180, (200, 5.0))), Script(invite=(180, (200, 5.0)))])
    first = lab.uac.call()
    first.invite()
    lab.net.run(1.0)
    first.cancel()
    lab.net.run(2.0)
    second = lab.uac.call()
    second.invite()
    lab.net.run(3.0)
    assert [len(uas.invites) for uas in lab.uas] == [1, 1]
