"""Active health checks: OPTIONS to every destination (docs/design.md section 4)."""

from __future__ import annotations

import pytest

from siplb.dispatch import DestinationSpec, HealthSettings, SetSpec, State, StateChanged
from siplb.proxy.actions import Target
from siplb.proxy.branch import owner_of
from siplb.proxy.core import Proxy
from siplb.proxy.listeners import Listener
from siplb.settings import ProxySettings
from siplb.sip import Request

from .harness import Lab, Script, make_lab

HEALTH = HealthSettings(interval=1.0, timeout=0.5, down_after=2, up_after=2)


def probe_lab(
    *options: int | None,
    health: HealthSettings = HEALTH,
    latency: float = 0.0,
    proven: bool = False,
) -> Lab:
    """Destinations answering OPTIONS with ``options`` (None: silent); ``proven``: each one
    answered a first probe before the scene starts (else they start probing)."""
    return make_lab(
        [Script(options=o) for o in options],
        health=health,
        probing=True,
        latency=latency,
        proven=proven,
    )


def probe_times(lab: Lab, i: int) -> list[float]:
    return lab.uas[i].arrivals("OPTIONS")


def changes(lab: Lab, i: int) -> list[tuple[float, State]]:
    return [
        (e.at, e.new)
        for e in lab.proxy.events
        if isinstance(e, StateChanged) and e.uri == lab.uri(i)
    ]


def test_every_destination_is_probed_every_interval() -> None:
    lab = probe_lab(200, 200)
    lab.net.run(3.1)
    first, second = probe_times(lab, 0), probe_times(lab, 1)
    assert first == [0.0, 1.0, 2.0, 3.0]
    # the first probe at once (a new destination waits for it), then spread a little, so that
    # probes do not go out in a burst every interval
    assert second == [0.0, 1.25, 2.25]
    assert lab.proxy.stats["probes_ok"] == 7
    # each came up at its first answer, and stayed up
    assert changes(lab, 0) == [(0.0, State.UP)]
    assert changes(lab, 1) == [(0.0, State.UP)]


def test_a_probe_is_an_options_from_us() -> None:
    lab = probe_lab(200)
    lab.net.run(0.1)
    [probe] = lab.uas[0].requests("OPTIONS")
    assert isinstance(probe, Request)
    assert probe.uri == b"sip:127.0.0.1:5070"
    [via] = probe.vias()
    assert via.sent_by == "127.0.0.1:5060"
    assert owner_of(via.branch or "") == "n1.0"
    assert lab.proxy.branches.is_probe(via.branch or "")
    assert probe.max_forwards == 70
    assert probe.cseq.method == "OPTIONS"
    assert lab.proxy.transactions == 0  # probes are not proxy transactions


@pytest.mark.parametrize("down_after", [1, 2, 3])
def test_a_silent_destination_goes_down_after_down_after_failures(down_after: int) -> None:
    health = HealthSettings(interval=1.0, timeout=0.5, down_after=down_after)
    lab = probe_lab(None, 200, health=health, proven=True)
    lab.net.run(10.0)
    deadline = health.interval * down_after + health.timeout
    down_at = (down_after - 1) * health.interval + health.timeout
    expected = [(0.5, State.SUSPECT)] if down_after > 1 else []
    assert changes(lab, 0) == [*expected, (down_at, State.DOWN)]
    assert down_at <= deadline
    assert changes(lab, 1) == []
    assert probe_times(lab, 0) == [float(n) for n in range(11)]  # a down one is still probed


@pytest.mark.parametrize("up_after", [1, 2, 3])
def test_a_destination_that_answers_again_comes_up_after_up_after_successes(
    up_after: int,
) -> None:
    health = HealthSettings(interval=1.0, timeout=0.5, down_after=1, up_after=up_after)
    lab = probe_lab(None, health=health)
    lab.net.run(2.9)
    assert lab.state(0) == State.DOWN
    lab.uas[0].script.options = 200
    lab.net.run(10.0)
    # probes at 3, 4, 5 ... are answered at once
    assert changes(lab, 0)[-1] == (3.0 + up_after - 1, State.UP)


# (status the destination answers OPTIONS with, resulting state after 3 s)
ANSWER_CASES = [
    (200, State.UP),
    (404, State.UP),  # any final answer shows the destination alive ...
    (486, State.UP),
    (408, State.DOWN),  # ... except the dead codes
    (500, State.DOWN),
    (503, State.DOWN),
]


@pytest.mark.parametrize(("status", "state"), ANSWER_CASES)
def test_the_probe_answer_decides(status: int, state: State) -> None:
    lab = probe_lab(status)
    lab.net.run(3.0)
    assert lab.state(0) == state


def test_an_answer_after_the_probe_timeout_is_a_failure() -> None:
    lab = probe_lab(200, latency=0.6)
    lab.net.run(3.0)
    assert lab.state(0) == State.DOWN
    assert lab.proxy.stats["probes_ok"] == 0


@pytest.mark.parametrize("down_after", [1, 2, 3])
def test_a_new_silent_destination_goes_from_probing_to_down(down_after: int) -> None:
    health = HealthSettings(interval=1.0, timeout=0.5, down_after=down_after)
    lab = probe_lab(None, 200, health=health)
    assert lab.state(0) == State.PROBING
    lab.net.run(10.0)
    # never suspect (it never took a call): probing until down_after probes failed
    assert changes(lab, 0) == [((down_after - 1) * health.interval + health.timeout, State.DOWN)]
    assert changes(lab, 1) == [(0.0, State.UP)]


def test_a_probe_transport_error_is_a_failure() -> None:
    lab = probe_lab(200, 200, proven=True)
    lab.net.unreachable.add(lab.uas[0].target)
    lab.net.run(1.1)
    assert changes(lab, 0) == [(0.0, State.SUSPECT), (1.0, State.DOWN)]


def test_a_down_destination_receives_no_calls() -> None:
    lab = probe_lab(503, 200)
    lab.net.run(3.0)
    assert lab.state(0) == State.DOWN
    for _ in range(4):
        call = lab.uac.call()
        call.invite()
        lab.net.advance(0.1)
        assert call.statuses[-1] == 200
    assert lab.uas[0].invites == []
    assert len(lab.uas[1].invites) == 4


def test_all_destinations_down_answers_503_with_retry_after() -> None:
    lab = probe_lab(None, None)
    lab.net.run(3.0)
    call = lab.uac.call()
    call.invite()
    lab.net.advance(0.1)
    assert call.statuses == [503]  # no destination: refused before any state
    assert call.responses[-1].get(b"retry-after") == b"5"
    assert lab.uas[0].invites == lab.uas[1].invites == []


def test_reconfigure_probes_the_new_destinations_only() -> None:
    lab = probe_lab(200, 200)
    lab.net.run(1.5)
    specs = lab.proxy.dispatcher.sets()[0].destinations
    kept = SetSpec("pbx", specs[1:])
    lab.proxy.reconfigure(sets=[kept], routes=[], default_set="pbx", now=lab.clock.now)
    lab.net.run(5.0)
    assert probe_times(lab, 0) == [0.0, 1.0]  # removed at 1.5: no more probes
    assert probe_times(lab, 1)[-1] == 4.25
    call = lab.uac.call()
    call.invite()
    lab.net.advance(0.1)
    assert call.statuses[-1] == 200
    assert lab.uas[0].invites == []


class _Routes:
    """A host whose kernel routes 10/8 from its private address (listener ``private``)."""

    def __init__(self, private: int) -> None:
        self.private = private

    def listener_for(self, target: Target) -> int | None:
        return self.private if target.host.startswith("10.") else None


@pytest.mark.parametrize(("anycast", "expected"), [(False, 1), (True, 0)])
def test_a_probe_leaves_from_the_address_the_route_picks_never_a_shared_one(
    anycast: bool, expected: int
) -> None:
    """Multi-homed: the probe to a private destination leaves from the private address, so its
    answer comes back; a shared (anycast) address is never the probe's, whatever the route."""
    listeners = [
        Listener(0, "udp", "203.0.113.1", 5060),
        Listener(1, "udp", "10.0.0.1", 5060, anycast=anycast),
    ]
    spec = DestinationSpec("sip:10.0.0.2:5060", "10.0.0.2", 5060)
    proxy = Proxy(
        listeners=listeners,
        sets=[SetSpec("pbx", (spec,))],
        default_set="pbx",
        settings=ProxySettings(),
        health=HEALTH,
        now=0.0,
        probing=True,
    )
    proxy.use_routing(_Routes(private=1))
    proxy.handle_timer(0.0)
    [probe] = [send for send in proxy.out if send.data.startswith(b"OPTIONS ")]
    assert probe.listener == expected
