"""The admission stage's ownership step (docs/design.md 4, one ownership model): a datagram owned by
another member becomes one ``HandOver`` and nothing else; alone, or owned here, the core handles
it as before. And ``members_changed(health_owner=...)``: one member decides every destination's
health, the others report what their traffic shows as ``PassiveObserved``."""

from __future__ import annotations

import pytest

from siplb.cluster import Member, Ownership
from siplb.dispatch import HealthSettings
from siplb.proxy.actions import HandOver, PassiveObserved

from .harness import UAC_TARGET, Lab, make_lab

ME = Member("n1", 0)
OTHER = Member("n1", 1)
WORKERS = [ME, OTHER]


def _call_id_owned_by(member: Member) -> bytes:
    ownership = Ownership(ME, WORKERS)
    for n in range(1000):
        call_id = b"call-%d@example.com" % n
        if ownership.owner_of_key(call_id) == member:
            return call_id
    raise AssertionError("no Call-ID for that member")


def _workers_lab(**kwargs: object) -> Lab:
    lab = make_lab(2, **kwargs)  # type: ignore[arg-type]
    lab.proxy.members_changed(Ownership(ME, WORKERS))
    return lab


def test_a_call_owned_elsewhere_is_handed_over_and_nothing_else() -> None:
    lab = _workers_lab()
    call = lab.uac.call(call_id=_call_id_owned_by(OTHER))
    call.invite()
    lab.net.run(1.0)
    [handover] = lab.proxy.handovers
    assert handover == HandOver(OTHER, call.data, UAC_TARGET, 0)
    assert lab.proxy.stats["handed_over"] == 1
    assert [w for w in lab.net.wire if w.source == "proxy"] == []  # no 100, no INVITE out
    assert lab.proxy.busy == 0
    assert call.statuses == []


def test_a_call_owned_here_goes_through() -> None:
    lab = _workers_lab()
    call = lab.uac.call(call_id=_call_id_owned_by(ME))
    call.invite()
    lab.net.run(1.0)
    assert lab.proxy.handovers == []
    assert lab.proxy.stats["handed_over"] == 0
    assert call.statuses[-1] == 200


def test_alone_every_call_goes_through() -> None:
    lab = make_lab(2)
    lab.proxy.members_changed(Ownership(ME, [ME]))
    for member in WORKERS:
        call = lab.uac.call(call_id=_call_id_owned_by(member))
        call.invite()
        lab.net.run(lab.clock.now + 1.0)
        assert call.statuses[-1] == 200
    assert lab.proxy.handovers == []
    assert lab.proxy.stats["handed_over"] == 0


# (this member, the health owner, whether a passive failure is decided here)
HEALTH_OWNERS = [(ME, ME, True), (OTHER, ME, False)]


@pytest.mark.parametrize(("me", "owner", "decides"), HEALTH_OWNERS)
def test_health_owner_decides_every_destination(me: Member, owner: Member, decides: bool) -> None:
    lab = make_lab(2, health=HealthSettings(down_after=1))
    lab.proxy.members_changed(Ownership(me, WORKERS), health_owner=owner)
    for i in range(2):
        lab.proxy.passive_failure(lab.uri(i), "timer B", 1.0)
    observed = [e for e in lab.proxy.events if isinstance(e, PassiveObserved)]
    if decides:
        assert observed == []
        assert [lab.state(i) for i in range(2)] == ["down", "down"]
    else:
        assert observed == [PassiveObserved(lab.uri(i), False, "timer B") for i in range(2)]
        assert [lab.state(i) for i in range(2)] == ["up", "up"]
