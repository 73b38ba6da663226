"""Probing first, per-set health and clustered followers, through the prober (docs/design.md 4)."""

from __future__ import annotations

from siplb.cluster import Member, Ownership
from siplb.dispatch import HealthSettings, SetSpec, State

from .harness import Script, make_lab

HEALTH = HealthSettings(interval=1.0, timeout=0.5, down_after=2, up_after=2)
ME, OTHER = Member("n1", 0), Member("n2", 0)


def test_calls_wait_for_the_first_probe_answer() -> None:
    """A silent destination never gets a call while another one of its set is up."""
    lab = make_lab([Script(options=None), Script()], health=HEALTH, probing=True)
    assert (lab.state(0), lab.state(1)) == (State.PROBING, State.PROBING)
    lab.net.run(0.3)  # both were probed at once; only the second one answered
    assert (lab.state(0), lab.state(1)) == (State.PROBING, State.UP)
    for _ in range(6):
        call = lab.uac.call()
        call.invite()
        lab.net.advance(0.05)
        assert call.statuses[-1] == 200
    assert lab.uas[0].invites == []


def test_before_any_answer_a_call_goes_to_a_probing_destination() -> None:
    """At start (every destination probing, no answer yet) a call is not refused."""
    lab = make_lab([Script(), Script()], health=HEALTH, probing=True, latency=0.05)
    call = lab.uac.call()
    call.invite()
    lab.net.advance(0.01)  # the probes' answers take 50 ms
    assert (lab.state(0), lab.state(1)) == (State.PROBING, State.PROBING)
    assert len(lab.uas[0].invites) + len(lab.uas[1].invites) == 1
    lab.net.advance(0.5)
    assert call.statuses[-1] == 200
    assert (lab.state(0), lab.state(1)) == (State.UP, State.UP)


def owned_elsewhere(lab_uris: list[str]) -> Ownership:
    """Two nodes where OTHER owns the health of every URI in ``lab_uris`` (found by trying)."""
    for n in range(200):
        other = Member(f"n{n + 2}", 0)
        ownership = Ownership(ME, [ME, other])
        if all(ownership.owner_of_key(uri.encode()) == other for uri in lab_uris):
            return ownership
    raise AssertionError("no member owning every URI")


def test_a_follower_probes_a_destination_while_it_is_probing_here() -> None:
    lab = make_lab([Script()], health=HEALTH, probing=True)
    lab.proxy.members_changed(owned_elsewhere([lab.uri(0)]), datagrams=False)
    lab.net.run(3.1)
    # its owner said nothing: this member probed it once, saw it alive, then left it
    assert lab.state(0) == State.UP
    assert lab.uas[0].arrivals("OPTIONS") == [0.0]
    # the owner's decisions are followed from then on
    lab.proxy.follow_probe(lab.uri(0), State.DOWN, lab.clock.now, "from n2")
    assert lab.state(0) == State.DOWN
    lab.net.run(5.1)
    assert lab.uas[0].arrivals("OPTIONS") == [0.0]


def test_a_follower_told_probing_probes_again() -> None:
    lab = make_lab([Script()], health=HEALTH, probing=True, proven=True)
    lab.proxy.members_changed(owned_elsewhere([lab.uri(0)]), datagrams=False)
    lab.net.run(2.1)
    assert lab.uas[0].arrivals("OPTIONS") == []
    lab.proxy.follow_probe(lab.uri(0), State.PROBING, lab.clock.now, "from n2: just added")
    lab.net.run(3.6)
    assert lab.uas[0].arrivals("OPTIONS") == [3.0]
    assert lab.state(0) == State.UP


def test_each_set_is_probed_with_its_own_health() -> None:
    lab = make_lab(
        [Script(), Script(options=503)],
        health=HEALTH,
        probing=True,
        sets={"pbx": [0], "reg": [1]},
    )
    fast = HealthSettings(interval=0.2, timeout=0.1, down_after=1, dead_codes=frozenset({408}))
    specs = {s.name: s for s in lab.proxy.dispatcher.sets()}
    lab.proxy.reconfigure(
        sets=[specs["pbx"], SetSpec("reg", specs["reg"].destinations, health=fast)],
        routes=[],
        default_set="pbx",
        now=lab.clock.now,
    )
    lab.net.run(1.05)
    assert lab.uas[0].arrivals("OPTIONS") == [0.0, 1.0]
    times = lab.uas[1].arrivals("OPTIONS")
    # at once, then every 0.2 s after its 0.25 s offset
    assert [round(t, 6) for t in times] == [0.0, 0.45, 0.65, 0.85, 1.05]
    # 503 is not a dead code for "reg": its registrar is alive
    assert lab.state(1) == State.UP
    assert lab.proxy.dispatcher.health_settings(lab.uri(1)) is fast
