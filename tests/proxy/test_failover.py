"""Failover inside one server transaction (docs/design.md section 3 step 5; RFC 3261 16.7 step 6)."""

from __future__ import annotations

import pytest

from siplb.dispatch import HealthSettings, State
from siplb.proxy.actions import FailedOver
from siplb.settings import ProxySettings

from .harness import Lab, Script, make_lab

SILENT = Script(invite=())
ANSWERS = Script(invite=(180, 200))


def place_call(lab: Lab, until: float = 10.0) -> list[int]:
    call = lab.uac.call()
    call.invite()
    lab.net.run(lab.clock.now + until)
    return call.statuses


def test_503_moves_the_invite_to_the_next_destination_in_the_same_transaction() -> None:
    lab = make_lab([Script(invite=(503,)), ANSWERS])
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]  # the caller never sees the 503
    assert len(lab.proxy.servers) == 1
    [first] = lab.uas[0].invites
    [second] = lab.uas[1].invites
    assert first.vias()[0].branch != second.vias()[0].branch
    assert first.vias()[1] == second.vias()[1]  # the caller's Via, the same request
    assert len(lab.uas[0].requests("ACK")) == 1  # the 503 is ACKed hop by hop
    assert (lab.active(0), lab.active(1)) == (0, 1)
    assert lab.proxy.stats["failovers"] == 1
    [event] = [e for e in lab.proxy.events if isinstance(e, FailedOver)]
    assert event.uri == lab.uri(0)
    assert event.cause.startswith("503")
    assert lab.state(0) == State.SUSPECT  # passive: a 503 counts against the destination


def test_silent_destination_is_left_after_failover_timeout() -> None:
    lab = make_lab([SILENT, ANSWERS], settings=ProxySettings(failover_timeout=2.0))
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.9)
    assert lab.uas[1].invites == []
    lab.net.run(3.0)
    assert [r.at for r in lab.uas[1].inbox] == [2.0]
    assert call.statuses == [100, 180, 200]
    assert lab.state(0) == State.SUSPECT
    assert (lab.active(0), lab.active(1)) == (0, 1)
    # the first attempt stopped retransmitting when it was abandoned (Timer A: 0.5, 1.5)
    assert [r.at for r in lab.uas[0].inbox] == [0.0, 0.5, 1.5]


# (destination scripts, final status the caller gets, Retry-After, when)
ALL_FAIL_CASES = [
    ((Script(invite=(503,)), Script(invite=(503,))), 500, None, 0.0),  # 16.7: 503 -> 500
    ((Script(invite=(500,)), Script(invite=(603,))), 603, None, 0.0),  # 6xx is best
    ((Script(invite=(503,)), Script(invite=(404,))), 404, None, 0.0),  # not a failover code
    ((Script(invite=(486,)), ANSWERS), 486, None, 0.0),  # 486 ends the search at once
    ((Script(invite=(502,)), Script(invite=(504,))), 502, None, 0.0),  # the first of a class
    ((SILENT, SILENT), 408, None, 4.0),  # no response at all: 408, no Retry-After (16.7)
    ((Script(invite=(503,)), SILENT), 500, None, 2.0),  # a response beats none
    ((SILENT, Script(invite=(503,))), 500, None, 2.0),
]


@pytest.mark.parametrize(("scripts", "status", "retry_after", "when"), ALL_FAIL_CASES)
def test_when_every_destination_fails_the_best_response_goes_upstream(
    scripts: tuple[Script, ...], status: int, retry_after: bytes | None, when: float
) -> None:
    lab = make_lab(list(scripts))
    call = lab.uac.call()
    call.invite()
    lab.net.run(10.0)
    assert call.statuses == [100, status]
    final = call.responses[-1]
    assert final.get(b"retry-after") == retry_after
    assert lab.uac.finals("INVITE") == [(when, status)]
    assert lab.active(0) == lab.active(1) == 0
    lab.net.run(60.0)
    assert lab.proxy.transactions == 0


# (max_attempts, destination scripts, how many destinations saw the INVITE, final status)
MAX_ATTEMPTS_CASES = [
    (1, [Script(invite=(503,))] * 3, 1, 500),
    (2, [Script(invite=(503,))] * 3, 2, 500),
    (3, [Script(invite=(503,))] * 3, 3, 500),
    (2, [Script(invite=(503,)), Script(invite=(503,)), ANSWERS], 2, 500),
    (3, [Script(invite=(503,)), Script(invite=(503,)), ANSWERS], 3, 200),
    (2, [SILENT] * 3, 2, 408),
]


@pytest.mark.parametrize(("max_attempts", "scripts", "tried", "status"), MAX_ATTEMPTS_CASES)
def test_max_attempts_is_honoured(
    max_attempts: int, scripts: list[Script], tried: int, status: int
) -> None:
    lab = make_lab(scripts, settings=ProxySettings(max_attempts=max_attempts))
    call = lab.uac.call()
    call.invite()
    lab.net.run(20.0)
    assert [bool(uas.invites) for uas in lab.uas] == [True] * tried + [False] * (3 - tried)
    assert call.statuses[-1] == status


# (settings, destinations: silent or full, what the caller gets, its Retry-After)
NO_ANSWER_CASES = [
    pytest.param(ProxySettings(max_attempts=1), 0, 408, None, id="attempt-limit"),
    pytest.param(ProxySettings(), 0, 408, None, id="all-tried"),
    pytest.param(ProxySettings(no_answer_status=480), 0, 480, None, id="configured"),
    pytest.param(ProxySettings(no_answer_status=503), 0, 503, None, id="503-without-retry"),
    pytest.param(ProxySettings(), 1, 503, b"5", id="the-others-full"),
]


@pytest.mark.parametrize(("settings", "max_calls", "status", "retry_after"), NO_ANSWER_CASES)
def test_no_destination_answered_is_not_an_overload(
    settings: ProxySettings, max_calls: int, status: int, retry_after: bytes | None
) -> None:
    """RFC 3261 16.7 step 6: silence is 408 (``no_answer_status``). A 503 with Retry-After
    would tell the upstream trunk that siplb is overloaded and stop all its calls (21.5.4);
    it stays for destinations that are full (``max_calls``), where backing off is right."""
    lab = make_lab([SILENT, SILENT], settings=settings, max_calls=max_calls or None)
    if max_calls:  # the second destination is busy with a call of its own
        lab.proxy.dispatcher.accounting.setup_started(b"other", lab.uri(1), 0.0)
    call = lab.uac.call()
    call.invite()
    lab.net.run(10.0)
    assert call.statuses == [100, status]
    assert call.responses[-1].get(b"retry-after") == retry_after


# (down_after, states of the silent destination after each of three calls)
PASSIVE_CASES = [
    (1, [State.DOWN, State.DOWN, State.DOWN]),
    (2, [State.SUSPECT, State.DOWN, State.DOWN]),
    (3, [State.SUSPECT, State.SUSPECT, State.DOWN]),
]


@pytest.mark.parametrize(("down_after", "states"), PASSIVE_CASES)
def test_passive_failures_mark_a_silent_destination(down_after: int, states: list[State]) -> None:
    lab = make_lab([SILENT], health=HealthSettings(down_after=down_after))
    seen = []
    for _ in states:
        place_call(lab)
        seen.append(lab.state(0))
    assert seen == states
    invites = {r.call_id for r in lab.uas[0].invites}
    assert len(invites) == down_after  # once down, calls no longer reach it


def test_down_set_answers_503_with_retry_after_at_once() -> None:
    lab = make_lab([SILENT], health=HealthSettings(down_after=1))
    place_call(lab)
    assert lab.state(0) == State.DOWN
    call = lab.uac.call()
    call.invite()
    lab.net.settle()
    assert call.statuses == [503]  # no destination: refused before any state
    assert call.responses[-1].get(b"retry-after") == b"5"


def test_passive_detection_can_be_turned_off() -> None:
    lab = make_lab([SILENT, ANSWERS], health=HealthSettings(passive=False))
    assert place_call(lab)[-1] == 200
    assert lab.state(0) == State.UP


def test_success_after_a_failure_clears_suspect() -> None:
    lab = make_lab([Script(invite=(503,)), ANSWERS])
    place_call(lab)
    assert lab.state(0) == State.SUSPECT
    lab.uas[0].script = ANSWERS
    lab.uas[1].script = SILENT
    # round-robin prefers up destinations: the next call goes to uas1 and times out there
    place_call(lab)
    assert lab.state(0) == State.UP
