"""The core's own guards against hostile callers: caps on pending transactions, health that
attackers cannot move, calls that never confirm, and the admission stage in front of it all."""

from __future__ import annotations

from siplb.dispatch import HealthSettings
from siplb.proxy.actions import Target
from siplb.settings import (
    LimitsSettings,
    ProtectionSettings,
    ProxySettings,
    RateSettings,
    ScannerSettings,
)

from .harness import UAC, Script, make_lab

SILENT = Script(invite=(100,))  # a PBX that says Trying and nothing more
STRANGER = Target("udp", "127.0.0.9", 5000)
OTHER = Target("udp", "127.0.0.10", 5000)
QUIET = ProtectionSettings(
    rate=RateSettings(enabled=False), scanners=ScannerSettings(enabled=False)
)


def test_pending_transactions_per_source_are_capped_with_503() -> None:
    caps = LimitsSettings(max_transactions=100, max_transactions_per_source=3)
    lab = make_lab([SILENT, SILENT], protection=QUIET, caps=caps)
    flooder = UAC("flooder", STRANGER)
    other = UAC("other", OTHER)
    lab.net.add(flooder)
    lab.net.add(other)
    calls = [flooder.call() for _ in range(5)]
    for call in calls:
        call.invite()
    lab.net.run(0.1)
    assert sorted(call.statuses[-1] for call in calls) == [100, 100, 100, 503, 503]
    assert lab.proxy.pending == 3
    third = other.call()
    third.invite()  # another source is not held back by the flooder's share
    lab.net.run(0.2)
    assert third.statuses == [100]
    assert lab.proxy.stats["refused:pending"] == 2


def test_pending_transactions_in_total_are_capped() -> None:
    caps = LimitsSettings(max_transactions=2, max_transactions_per_source=2)
    lab = make_lab([SILENT, SILENT], protection=QUIET, caps=caps)
    callers = [UAC(f"c{i}", Target("udp", f"127.0.0.{20 + i}", 5000)) for i in range(3)]
    for caller in callers:
        lab.net.add(caller)
        caller.call().invite()
    lab.net.run(0.1)
    finals = [c.calls[next(iter(c.calls))].statuses[-1] for c in callers]
    assert sorted(finals) == [100, 100, 503]


def test_pending_count_falls_when_answers_come() -> None:
    lab = make_lab(2, protection=QUIET)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert 200 in call.statuses
    assert lab.proxy.pending == 0
    assert not lab.proxy.pending_by_source


def test_a_pbx_ignoring_register_is_not_marked_down() -> None:
    """Health is the destinations', not the attackers': only call traffic counts."""
    health = HealthSettings(down_after=1)
    lab = make_lab([Script(other=None), Script(other=None)], protection=QUIET, health=health)
    stranger = UAC("scanner", STRANGER)
    lab.net.add(stranger)
    for _ in range(4):
        stranger.send(stranger.request("REGISTER", b"sip:127.0.0.1:5060"))
    lab.net.run(10.0)
    assert [lab.state(0), lab.state(1)] == ["up", "up"]
    assert lab.proxy.stats["passive_ignored"] >= 1


def test_invite_timeouts_still_mark_down() -> None:
    health = HealthSettings(down_after=1)
    lab = make_lab([Script(invite=()), Script()], protection=QUIET, health=health)
    call = lab.uac.call()
    call.invite()
    lab.net.run(10.0)
    assert lab.state(0) == "down"
    assert 200 in call.statuses  # failed over to the other


def test_a_2xx_never_acked_stops_holding_the_destination() -> None:
    settings = ProxySettings(t1=0.05)  # 64*T1 = 3.2 s
    lab = make_lab(2, settings=settings, protection=QUIET)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert 200 in call.statuses
    assert lab.active(0) + lab.active(1) == 1
    lab.net.run(6.0)  # no ACK ever came
    assert lab.active(0) + lab.active(1) == 0


def test_an_acked_call_keeps_counting() -> None:
    settings = ProxySettings(t1=0.05)
    lab = make_lab(2, settings=settings, protection=QUIET)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    call.ack()
    lab.net.run(10.0)
    assert lab.active(0) + lab.active(1) == 1


def test_a_scanner_never_reaches_the_pbx() -> None:
    lab = make_lab(2, protection=ProtectionSettings())
    scanner = UAC("scanner", STRANGER)
    lab.net.add(scanner)
    for method in ("OPTIONS", "REGISTER", "INVITE"):
        scanner.send(
            scanner.request(method, b"sip:100@127.0.0.1:5060", (b"User-Agent", b"friendly-scanner"))
        )
    lab.net.run(5.0)
    assert all(uas.inbox == [] for uas in lab.uas)
    assert scanner.inbox == []  # dropped silently
    assert lab.proxy.admission is not None
    assert lab.proxy.admission.is_banned(STRANGER.host, 5.0)


def test_a_flood_from_one_source_is_banned_and_real_calls_go_on() -> None:
    protection = ProtectionSettings(rate=RateSettings(window=1.0, invite=20, ban_time=30.0))
    lab = make_lab(2, protection=protection)
    flooder = UAC("flooder", STRANGER)
    lab.net.add(flooder)
    for _ in range(200):
        flooder.call().invite()
    lab.net.run(0.5)
    reached = sum(len(uas.invites) for uas in lab.uas)
    assert reached <= 20
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.5)
    assert 200 in call.statuses
    assert lab.proxy.admission is not None
    assert lab.proxy.admission.is_banned(STRANGER.host, 1.5)
    assert not lab.proxy.admission.is_banned(STRANGER.host, 40.0)


def test_a_2xx_never_acked_gets_a_bye_to_both_sides_when_configured() -> None:
    settings = ProxySettings(t1=0.05, bye_unconfirmed=True)  # 64*T1 = 3.2 s
    lab = make_lab(1, settings=settings, protection=QUIET)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert 200 in call.statuses
    assert lab.proxy.unconfirmed
    lab.net.run(6.0)  # no ACK ever came
    [to_callee] = lab.uas[0].requests("BYE")
    [to_caller] = lab.uac.requests("BYE")
    invite = lab.uas[0].invites[0]
    [answer] = [r for r in call.responses if r.status == 200]
    # 12.2.1.1: each inside the dialog, from the other side's point of view
    assert to_callee.uri == b"sip:uas0@127.0.0.1:5070"
    assert to_callee.get(b"from") == invite.get(b"from")
    assert to_callee.to_tag == answer.to_tag
    assert to_caller.uri == b"sip:alice@127.0.0.1:5061"
    assert to_caller.get(b"to") == invite.get(b"from")
    assert to_caller.from_tag == answer.to_tag
    assert to_callee.call_id == to_caller.call_id == call.call_id
    assert to_callee.cseq.number == invite.cseq.number + 1
    assert lab.active(0) == 0
    assert lab.proxy.unconfirmed == {}
    assert lab.proxy.stats["unconfirmed_ended"] == 1
    lab.net.run(40.0)
    assert lab.proxy.clients == {}  # both BYEs were answered and their transactions ended


def test_no_bye_for_an_acked_call_nor_without_the_setting() -> None:
    for bye_unconfirmed, ack in ((True, True), (False, False)):
        settings = ProxySettings(t1=0.05, bye_unconfirmed=bye_unconfirmed)
        lab = make_lab(1, settings=settings, protection=QUIET)
        call = lab.uac.call()
        call.invite()
        lab.net.run(1.0)
        if ack:
            call.ack()
        lab.net.run(10.0)
        assert lab.uas[0].requests("BYE") == []
        assert lab.uac.requests("BYE") == []
        assert lab.proxy.unconfirmed == {}
