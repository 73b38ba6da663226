"""NAT bindings shared between members: what a keepalive exports of what it learns, and the
bindings it is told to keep open for others (adopt) or to leave to another member (release)."""

from __future__ import annotations

import pytest

from siplb.proxy.actions import Send, Target
from siplb.proxy.core import Proxy
from siplb.proxy.keepalive import SLOTS, BindingChanges, Keepalive, Shared, flow_key, parse_flow

from .test_registrar import PHONE_NAT, forwarded, make_proxy, register, registrar_ok, take

ELSEWHERE = Target("udp", "198.51.100.20", 41000, flow=True)  # a phone registered elsewhere
LEARNED = Shared(ELSEWHERE, 0, b"sip:bob@example.com", b"sip:bob@192.168.7.2:5060", 300.0)


def keepalive_of(proxy: Proxy) -> Keepalive:
    assert proxy.front is not None
    assert proxy.front.keepalive is not None
    return proxy.front.keepalive


def pings_until(proxy: Proxy, until: float) -> list[tuple[float, Send]]:
    """Run the proxy's timers up to ``until``; the keepalives it sent, with their times."""
    sent: list[tuple[float, Send]] = []
    for _ in range(20 * SLOTS):
        deadline = proxy.get_timer()
        if deadline is None or deadline > until:
            break
        proxy.handle_timer(deadline)
        sent += [(deadline, send) for send in take(proxy)]
    return sent


def test_what_is_learned_is_exported_once_drained_from_the_first_drain_on() -> None:
    proxy = make_proxy(keepalive_interval=10.0)
    keepalive = keepalive_of(proxy)
    registrar_ok(proxy, forwarded(proxy, register(), PHONE_NAT, 0), expires=600, now=0.1)
    first = keepalive.changes(100)  # a binding learned before the first drain is in it
    assert [(s.flow, s.aor, s.contact, s.expires_at) for s in first.learned] == [
        (PHONE_NAT, b"sip:alice@example.com", b"sip:alice@192.168.1.10:5060", 600.1)
    ]
    assert keepalive.changes(100) == BindingChanges()
    again = register(branch=b"z9hG4bKreg2")
    registrar_ok(proxy, forwarded(proxy, again, PHONE_NAT, 0), expires=600, now=50.0)
    assert [s.expires_at for s in keepalive.changes(100).learned] == [650.0]  # refreshed
    gone = register(branch=b"z9hG4bKreg3")
    registrar_ok(proxy, forwarded(proxy, gone, PHONE_NAT, 0), expires=0, now=60.0)
    assert keepalive.changes(100) == BindingChanges((), (PHONE_NAT,))


def test_an_adopted_binding_is_pinged_but_never_exported_as_learned() -> None:
    proxy = make_proxy(keepalive_interval=10.0)
    keepalive = keepalive_of(proxy)
    keepalive.changes(100)
    keepalive.adopt(LEARNED, now=0.0)
    assert keepalive.changes(100) == BindingChanges()
    pings = pings_until(proxy, 10.0)
    assert [send.target for _, send in pings] == [ELSEWHERE]
    assert pings[0][1].data.startswith(b"OPTIONS sip:bob@192.168.7.2:5060 SIP/2.0")
    assert proxy.front is not None
    assert proxy.front.knows_flow(ELSEWHERE)  # requests along its Path reach it from here too


def test_a_released_binding_is_no_longer_pinged_and_nothing_is_exported() -> None:
    proxy = make_proxy(keepalive_interval=10.0)
    keepalive = keepalive_of(proxy)
    keepalive.changes(100)
    registrar_ok(proxy, forwarded(proxy, register(), PHONE_NAT, 0), now=0.1)
    keepalive.changes(100)
    keepalive.release(PHONE_NAT)
    assert keepalive.changes(100) == BindingChanges()  # the binding lives on elsewhere
    assert pings_until(proxy, 30.0) == []


def test_an_adopted_binding_that_expires_is_exported_as_gone() -> None:
    proxy = make_proxy(keepalive_interval=1.0)
    keepalive = keepalive_of(proxy)
    keepalive.changes(100)
    keepalive.adopt(Shared(ELSEWHERE, 0, LEARNED.aor, LEARNED.contact, 2.0), now=0.0)
    pings_until(proxy, 4.0)
    assert keepalive.bindings == {}
    assert keepalive.changes(100) == BindingChanges((), (ELSEWHERE,))


ADOPT_REFUSED = [
    pytest.param(Shared(ELSEWHERE, 0, b"a", b"sip:a@h", 5.0), 10.0, id="expired"),
    pytest.param(
        Shared(Target("tcp", "198.51.100.20", 41000, flow=True), 1, b"a", b"sip:a@h", 50.0),
        0.0,
        id="stream flow",
    ),
]


@pytest.mark.parametrize(("shared", "now"), ADOPT_REFUSED)
def test_expired_or_stream_bindings_are_not_adopted(shared: Shared, now: float) -> None:
    keepalive = keepalive_of(make_proxy(keepalive_interval=10.0))
    keepalive.adopt(shared, now)
    assert keepalive.bindings == {}


def test_stream_bindings_are_not_exported() -> None:
    proxy = make_proxy(keepalive_interval=10.0)
    keepalive = keepalive_of(proxy)
    keepalive.changes(100)
    source = Target("tls", "198.51.100.9", 52000)
    registrar_ok(proxy, forwarded(proxy, register(source), source, 2))
    assert list(keepalive.bindings) == [source]
    assert keepalive.changes(100) == BindingChanges()


def test_each_drain_is_bounded() -> None:
    keepalive = keepalive_of(make_proxy(keepalive_interval=10.0))
    keepalive.changes(1)
    for n in range(25):
        flow = Target("udp", "198.51.100.30", 40000 + n, flow=True)
        keepalive.learned(flow, 0, b"sip:p%d@example.com" % n, b"sip:p@10.0.0.9", 600, 0.0)
    sizes = []
    while learned := keepalive.changes(10).learned:
        sizes.append(len(learned))
    assert sizes == [10, 10, 5]


FLOWS = [
    Target("udp", "198.51.100.7", 40000, flow=True),
    Target("tls", "2001:db8::7", 5061, flow=True),
]


@pytest.mark.parametrize("flow", FLOWS)
def test_a_flow_name_reads_back(flow: Target) -> None:
    assert parse_flow(flow_key(flow)) == flow


@pytest.mark.parametrize("name", ["", "udp", "sctp:1.2.3.4:5", "udp:1.2.3.4:x", "udp::5060"])
def test_a_name_no_flow_has_reads_as_none(name: str) -> None:
    assert parse_flow(name) is None
