"""Overload protection (siplb.proxy.overload): new calls refused early with 503 + Retry-After
while the proxy is behind or over its call rate; calls in progress and health unharmed."""

from __future__ import annotations

import pytest

from siplb.config import ConfigError, parse_config
from siplb.dispatch import HealthSettings, State
from siplb.proxy.actions import OverloadChanged, RequestRejected
from siplb.proxy.overload import BEHIND, RATE, OverloadGuard
from siplb.settings import ProxySettings

from .harness import UAC, Lab, Script, make_lab

SILENT = Script(invite=())
SLOW = Script(invite=((180, 0.5), (200, 1.0)))

# ---- the guard alone ---------------------------------------------------------------------------

# (backlog reports as (fill, now), the state changes they make, overloaded at the end)
BACKLOG_CASES = [
    pytest.param([(0.1, 0.0), (0.24, 0.1)], [], False, id="below the mark"),
    pytest.param([(0.25, 0.0)], [True], True, id="at the mark"),
    pytest.param([(0.3, 0.0), (0.2, 0.1), (0.13, 0.2)], [True], True, id="hysteresis holds"),
    pytest.param([(0.3, 0.0), (0.2, 0.1), (0.125, 0.2)], [True, False], False, id="half clears"),
    pytest.param(
        [(0.9, 0.0), (0.0, 0.1), (0.5, 0.2)], [True, False, True], True, id="behind again"
    ),
]


@pytest.mark.parametrize(("reports", "changes", "overloaded"), BACKLOG_CASES)
def test_backlog_sets_and_clears_overload_with_hysteresis(
    reports: list[tuple[float, float]], changes: list[bool], overloaded: bool
) -> None:
    guard = OverloadGuard(max_call_rate=0, backlog_high=0.25, excuse_window=2.0, now=0.0)
    events = [guard.report_backlog(fill, now) for fill, now in reports]
    assert [e.active for e in events if e is not None] == changes
    assert guard.overloaded is overloaded
    assert guard.admit(1.0) == (BEHIND if overloaded else None)


def test_backlog_mark_zero_turns_the_check_off() -> None:
    guard = OverloadGuard(max_call_rate=0, backlog_high=0, excuse_window=2.0, now=0.0)
    assert guard.report_backlog(1.0, 0.0) is None
    assert guard.admit(0.0) is None
    assert not guard.excuses_timeouts(0.0)


# (max_call_rate, arrival times of new calls, which are admitted)
RATE_CASES = [
    pytest.param(0, [0.0] * 50, [True] * 50, id="no limit"),
    pytest.param(2, [0.0, 0.0, 0.0], [True, True, False], id="one second of burst"),
    pytest.param(2, [0.0, 0.0, 0.0, 0.5, 0.5], [True, True, False, True, False], id="refills"),
    pytest.param(
        4, [0, 0, 0, 0, 0, 0.25, 0.25, 0.5], [True] * 4 + [False, True, False, True], id="paced"
    ),
    pytest.param(0.5, [0.0, 1.0, 2.0, 2.5], [True, False, True, False], id="below one a second"),
]


@pytest.mark.parametrize(("rate", "arrivals", "admitted"), RATE_CASES)
def test_call_rate_token_bucket(rate: float, arrivals: list[float], admitted: list[bool]) -> None:
    guard = OverloadGuard(max_call_rate=rate, backlog_high=0.25, excuse_window=2.0, now=0.0)
    got = [guard.admit(now) for now in arrivals]
    assert [reason is None for reason in got] == admitted
    assert all(reason in (None, RATE) for reason in got)
    assert guard.refused == admitted.count(False)


def test_timeouts_are_excused_while_behind_and_for_a_window_after() -> None:
    guard = OverloadGuard(max_call_rate=0, backlog_high=0.25, excuse_window=2.0, now=0.0)
    assert not guard.excuses_timeouts(0.0)
    guard.report_backlog(0.5, 1.0)
    assert guard.excuses_timeouts(1.0)
    guard.report_backlog(0.05, 3.0)  # cleared at 3.0: excused until 5.0
    assert not guard.overloaded
    assert guard.excuses_timeouts(5.0)
    assert not guard.excuses_timeouts(5.01)


# ---- in the proxy core ---------------------------------------------------------------------------


def overloaded_lab(*scripts: Script, settings: ProxySettings | None = None) -> Lab:
    lab = make_lab(list(scripts) or 2, settings=settings)
    lab.proxy.report_backlog(0.6, lab.clock.now)
    return lab


def test_new_call_while_behind_gets_503_with_retry_after_and_no_other_work() -> None:
    lab = overloaded_lab(settings=ProxySettings(retry_after=7))
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [503]  # not even 100 Trying first
    [response] = call.responses
    assert response.get(b"retry-after") == b"7"
    assert all(uas.invites == [] for uas in lab.uas)
    assert lab.proxy.clients == {}
    assert all(uas.inbox == [] for uas in lab.uas)  # the ACK for the 503 stayed hop by hop
    assert lab.proxy.overload.refused == 1
    [change] = [e for e in lab.proxy.events if isinstance(e, OverloadChanged)]
    assert change == OverloadChanged(True, 0.6)
    [rejected] = [e for e in lab.proxy.events if isinstance(e, RequestRejected)]
    assert (rejected.status, rejected.reason) == (503, BEHIND)


def test_retransmitted_invite_gets_the_same_503() -> None:
    lab = make_lab(2, uac=UAC(auto_ack=False))
    lab.proxy.report_backlog(0.6, 0.0)
    call = lab.uac.call()
    call.invite()
    lab.net.run(0.1)
    call.invite()  # the caller did not hear the 503: the same INVITE again
    lab.net.run(0.4)  # before Timer G (T1) repeats the 503 by itself
    assert call.statuses == [503, 503]  # one stateless answer per copy, never repeated by us
    assert call.responses[0].to_bytes() == call.responses[1].to_bytes()
    assert lab.proxy.transactions == 0
    assert all(uas.inbox == [] for uas in lab.uas)


def test_calls_in_progress_complete_while_new_ones_are_refused() -> None:
    lab = make_lab([SLOW, SLOW])
    early = lab.uac.call()
    early.invite()
    lab.net.run(0.2)
    lab.proxy.report_backlog(0.6, lab.clock.now)  # behind, with the first call still ringing
    late = lab.uac.call()
    late.invite()
    lab.net.run(1.5)
    assert early.statuses == [100, 180, 200]  # its responses still flow
    assert late.statuses == [503]
    early.ack()
    lab.net.run(2.0)
    early.bye()  # in-dialog requests still flow
    lab.net.run(3.0)
    assert [r.status for r in early.responses_to("BYE")] == [200]
    assert sum(len(uas.requests("BYE")) for uas in lab.uas) == 1


def test_new_calls_are_admitted_again_once_the_backlog_drains() -> None:
    lab = overloaded_lab()
    lab.net.run(0.5)
    lab.proxy.report_backlog(0.1, lab.clock.now)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]
    assert [e.active for e in lab.proxy.events if isinstance(e, OverloadChanged)] == [True, False]


def test_call_rate_limit_refuses_calls_above_it() -> None:
    lab = make_lab(2, settings=ProxySettings(max_call_rate=2))
    calls = [lab.uac.call() for _ in range(3)]
    for call in calls:
        call.invite()
    lab.net.run(0.5)
    assert [call.statuses[-1] for call in calls] == [200, 200, 503]
    [rejected] = [e for e in lab.proxy.events if isinstance(e, RequestRejected)]
    assert rejected.reason == RATE
    lab.net.run(1.0)
    later = lab.uac.call()
    later.invite()
    lab.net.run(2.0)
    assert later.statuses == [100, 180, 200]


# (backlog reported while the first attempt waits, the silent destination's state after failover)
SILENCE_CASES = [
    pytest.param(0.0, State.SUSPECT, 0, id="not behind: silence counts against it"),
    pytest.param(0.6, State.UP, 1, id="behind: our own backlog, not its fault"),
]


@pytest.mark.parametrize(("backlog", "state", "excused"), SILENCE_CASES)
def test_timeouts_while_behind_do_not_mark_destinations(
    backlog: float, state: State, excused: int
) -> None:
    lab = make_lab([SILENT, Script()], settings=ProxySettings(failover_timeout=2.0))
    call = lab.uac.call()
    call.invite()
    lab.net.run(0.5)
    lab.proxy.report_backlog(backlog, lab.clock.now)
    lab.net.run(3.0)
    assert call.statuses == [100, 180, 200]  # failover still happens
    assert lab.state(0) == state
    assert lab.proxy.stats["timeouts_excused"] == excused


def test_503_from_a_destination_still_counts_while_behind() -> None:
    lab = make_lab([Script(invite=(503,)), Script()])
    call = lab.uac.call()
    call.invite()
    lab.net.run(0.0)
    lab.proxy.report_backlog(0.6, lab.clock.now)  # after the INVITE went in: it is forwarded
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]
    assert lab.state(0) == State.SUSPECT


def test_probe_timeouts_while_behind_do_not_mark_destinations_down() -> None:
    health = HealthSettings(interval=1.0, timeout=0.5, down_after=2, up_after=2)
    lab = make_lab([Script(options=None), Script()], health=health, probing=True, proven=True)
    for step in range(1, 41):  # behind for 4 s: probe answers would be stuck in our queue
        lab.net.run(step * 0.1)
        lab.proxy.report_backlog(0.6, lab.clock.now)
    assert lab.state(0) == State.UP
    assert lab.proxy.stats["probes_excused"] >= 3
    lab.proxy.report_backlog(0.0, lab.clock.now)
    lab.net.run(10.0)  # caught up: the silence is the destination's own again
    assert lab.state(0) == State.DOWN


# ---- settings ----------------------------------------------------------------------------------

BASE = """
[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:5070" }]
"""


def test_overload_settings_defaults_and_values() -> None:
    assert parse_config(BASE).proxy.max_call_rate == 0
    assert parse_config(BASE).proxy.overload_backlog == 0.25
    config = parse_config(BASE + "[proxy]\nmax_call_rate = 800\noverload_backlog = 0.5\n")
    assert (config.proxy.max_call_rate, config.proxy.overload_backlog) == (800, 0.5)


@pytest.mark.parametrize(
    "line", ["max_call_rate = -1", "overload_backlog = 1.5", "overload_backlog = -0.1"]
)
def test_overload_settings_out_of_range_are_refused(line: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + f"[proxy]\n{line}\n")
    assert f"proxy.{line.split()[0]}" in str(info.value)
