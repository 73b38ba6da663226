"""The admission stage (siplb.proxy.admission): the order of its steps, bans and their events,
scanners found in final answers, bounded tables. Time is an explicit ``now``."""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import ip_network

import pytest

from siplb.proxy.admission import (
    Admission,
    BanLifted,
    BanView,
    SourceBanned,
    Verdict,
)
from siplb.settings import AclRule, IPNetwork, ProtectionSettings, RateSettings, ScannerSettings
from siplb.sip import Request, parse

PHONE = "198.51.100.20"
PBX = "192.0.2.10"  # a destination
LISTENERS = ("public", "internal", None)
PUBLIC, INTERNAL, UNNAMED = 0, 1, 2


def nets(*specs: str) -> tuple[IPNetwork, ...]:
    return tuple(ip_network(spec) for spec in specs)


def request(
    method: str = "INVITE",
    *,
    to: bytes = b"<sip:100@example.com>",
    agent: bytes = b"Yealink SIP-T46S 66.86.0.15",
    from_: bytes = b"<sip:alice@example.com>;tag=a1",
    extra: tuple[bytes, ...] = (),
) -> Request:
    lines = [
        b"%s sip:100@example.com SIP/2.0" % method.encode(),
        b"Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKadm1",
        b"Max-Forwards: 70",
        b"From: " + from_,
        b"To: " + to,
        b"Call-ID: adm-1@example.com",
        b"CSeq: 1 " + method.encode(),
        b"User-Agent: " + agent,
        *extra,
        b"Content-Length: 0",
    ]
    message = parse(b"\r\n".join(lines) + b"\r\n\r\n")
    assert isinstance(message, Request)
    return message


INVITE = request()
REINVITE = request(to=b"<sip:100@example.com>;tag=b1")
REGISTER = request("REGISTER")
OPTIONS = request("OPTIONS")
ACK = request("ACK", to=b"<sip:100@example.com>;tag=b1")
SCANNER = request("OPTIONS", agent=b"friendly-scanner")

RULES = (
    AclRule("deny", nets("10.0.0.0/8"), methods=frozenset({"REGISTER", "ACK"})),
    AclRule("allow", nets("10.1.0.0/16"), listeners=frozenset({"internal"})),
    AclRule("deny", nets("10.1.0.0/16")),
    AclRule("deny", nets("192.0.2.0/24"), methods=frozenset({"MESSAGE"})),
)
SETTINGS = ProtectionSettings(
    trusted=nets("172.16.0.0/12"),
    acl=RULES,
    blocked=nets("203.0.113.0/24", "10.9.0.0/16", "2001:db8:bad::/48"),
    rate=RateSettings(invite=3, register=2, other=4, ban_time=60.0, max_ban_time=3600.0),
)


def admission(settings: ProtectionSettings = SETTINGS) -> Admission:
    adm = Admission(settings, listener_names=LISTENERS, now=0.0)
    adm.set_destinations([PBX, "2001:db8::10"])
    return adm


# ---- the order of the steps ---------------------------------------------------------------------

_BLOCKED = Verdict("blocklist", None)
_DENIED = Verdict("acl", 403)

# (request, host, listener, verdict)
ORDER_CASES = [
    pytest.param(INVITE, PHONE, PUBLIC, None, id="a phone is admitted"),
    pytest.param(INVITE, "203.0.113.5", PUBLIC, _BLOCKED, id="blocklist drops silently"),
    pytest.param(INVITE, "::ffff:203.0.113.5", PUBLIC, _BLOCKED, id="blocklist, ipv4-mapped"),
    pytest.param(INVITE, "2001:db8:bad::1", PUBLIC, _BLOCKED, id="blocklist, v6"),
    pytest.param(INVITE, "10.9.0.1", INTERNAL, _BLOCKED, id="blocklist before the ACL allows"),
    pytest.param(REGISTER, "10.2.0.1", PUBLIC, _DENIED, id="acl deny by method: 403"),
    pytest.param(INVITE, "10.2.0.1", PUBLIC, None, id="acl: no rule for the method"),
    pytest.param(ACK, "10.2.0.1", PUBLIC, Verdict("acl", None), id="an ACK is never answered"),
    pytest.param(INVITE, "10.1.0.1", INTERNAL, None, id="acl allow by listener"),
    pytest.param(INVITE, "10.1.0.1", PUBLIC, _DENIED, id="acl deny on another listener"),
    pytest.param(INVITE, "10.1.0.1", UNNAMED, _DENIED, id="acl deny on an unnamed listener"),
    pytest.param(INVITE, "10.1.0.1", 7, _DENIED, id="an unknown listener has no name"),
    pytest.param(request("MESSAGE"), PBX, PUBLIC, _DENIED, id="acl applies to destinations"),
    pytest.param(SCANNER, PBX, PUBLIC, None, id="a destination is no scanner"),
    pytest.param(SCANNER, "172.16.0.9", PUBLIC, None, id="a trusted network is no scanner"),
    pytest.param(SCANNER, "::ffff:192.0.2.10", PUBLIC, None, id="a destination, ipv4-mapped"),
    pytest.param(SCANNER, "2001:DB8::10", PUBLIC, None, id="a v6 destination, other spelling"),
    pytest.param(SCANNER, PHONE, PUBLIC, Verdict("scanner", None, "User-Agent friendly-scanner")),
    pytest.param(INVITE, "not an address", PUBLIC, None, id="a bad host string is admitted"),
    pytest.param(SCANNER, "", PUBLIC, Verdict("scanner", None, "User-Agent friendly-scanner")),
]


@pytest.mark.parametrize(("message", "host", "listener", "verdict"), ORDER_CASES)
def test_check_order(message: Request, host: str, listener: int, verdict: Verdict | None) -> None:
    adm = admission()
    assert adm.check(message, host, listener, 0.0) == verdict
    assert sum(adm.drops.values()) == (verdict is not None)
    if verdict is not None:
        assert adm.drops[verdict.reason] == 1


# (host, verdict of check_source) after PHONE and the destination PBX were banned
SOURCE_CASES = [
    pytest.param(PHONE, Verdict("banned", None), id="banned"),
    pytest.param("::ffff:198.51.100.20", Verdict("banned", None), id="banned, ipv4-mapped"),
    pytest.param("203.0.113.1", _BLOCKED, id="blocked"),
    pytest.param("10.2.0.1", None, id="the ACL needs the request"),
    pytest.param(PBX, None, id="a destination is never banned"),
    pytest.param("bad host", None, id="a bad host string"),
]


@pytest.mark.parametrize(("host", "verdict"), SOURCE_CASES)
def test_check_source_before_parsing(host: str, verdict: Verdict | None) -> None:
    adm = admission()
    adm.ban(PHONE, 60.0, "operator", 0.0)
    adm.ban(PBX, 60.0, "operator", 0.0)
    assert adm.check_source(host, 1.0) == verdict
    assert adm.drops == ({} if verdict is None else {verdict.reason: 1})
    assert adm.check_source(host, 60.0) == (_BLOCKED if verdict == _BLOCKED else None)


# ---- bans ---------------------------------------------------------------------------------------


def test_a_ban_drops_until_it_expires_then_is_lifted() -> None:
    adm = admission()
    assert adm.ban(PHONE, 30.0, "operator", now=0.0)
    assert adm.events == [SourceBanned(PHONE, "operator", 30.0, 1)]
    assert adm.check(INVITE, PHONE, PUBLIC, 29.9) == Verdict("banned", None)
    assert adm.is_banned(PHONE, 29.9)
    assert adm.bans(29.9) == [BanView(PHONE, "operator", 30.0, 1)]
    adm.expire(29.9)
    assert adm.events[1:] == []
    assert adm.check(INVITE, PHONE, PUBLIC, 30.0) is None  # ended, even before expire()
    adm.expire(30.0)
    assert adm.events[1:] == [BanLifted(PHONE)]
    assert adm.bans(30.0) == []
    assert adm.drops == {"banned": 1}


# (host banned, host checked): one source, however it is spelled
SPELLING_CASES = [
    pytest.param("198.51.100.20", "::ffff:198.51.100.20", id="mapped checked"),
    pytest.param("::ffff:198.51.100.20", "198.51.100.20", id="mapped banned"),
    pytest.param("2001:DB8:0::5", "2001:db8::5", id="v6 spelling"),
]


@pytest.mark.parametrize(("banned", "checked"), SPELLING_CASES)
def test_a_ban_holds_for_every_spelling(banned: str, checked: str) -> None:
    adm = admission()
    adm.ban(banned, 60.0, "operator", now=0.0)
    assert adm.check(INVITE, checked, PUBLIC, 1.0) == Verdict("banned", None)
    assert adm.is_banned(checked, 1.0)


def test_ban_and_unban_by_an_operator() -> None:
    adm = admission()
    assert adm.ban(PHONE, 60.0, "operator", 0.0)
    assert not adm.ban(PHONE, 30.0, "from another worker", 0.0)  # no echo, no event
    assert adm.ban(PHONE, 120.0, "operator", 0.0)
    assert not adm.ban(PBX, 60.0, "operator", 0.0)  # destinations are never banned
    assert not adm.ban("172.16.1.1", 60.0, "operator", 0.0)
    assert adm.unban(PHONE)
    assert not adm.unban(PHONE)
    assert adm.events == [
        SourceBanned(PHONE, "operator", 60.0, 1),
        SourceBanned(PHONE, "operator", 120.0, 2),
        BanLifted(PHONE),
    ]
    assert adm.check(INVITE, PHONE, PUBLIC, 1.0) is None


def test_reconfigure_keeps_bans_but_lifts_those_of_newly_trusted_sources() -> None:
    adm = admission()
    adm.ban(PHONE, 60.0, "operator", 0.0)
    adm.ban("198.51.100.21", 60.0, "operator", 0.0)
    adm.reconfigure(replace(SETTINGS, trusted=nets("198.51.100.21/32")), 1.0)
    assert [b.host for b in adm.bans(1.0)] == [PHONE]
    assert adm.events[-1] == BanLifted("198.51.100.21")
    adm.set_destinations([PHONE])
    assert adm.bans(1.0) == []
    assert adm.events[-1] == BanLifted(PHONE)


# ---- rates --------------------------------------------------------------------------------------

# (requests sent at now=0 from one phone, the verdict of each: None or its reason)
RATE_CASES = [
    pytest.param([INVITE] * 3, [None] * 3, id="invite budget"),
    pytest.param([INVITE] * 4 + [OPTIONS], [None] * 3 + ["rate", "banned"], id="invite over"),
    pytest.param([REGISTER] * 3, [None, None, "rate"], id="register over"),
    pytest.param([REINVITE] * 4 + [ACK], [None] * 4 + ["rate"], id="re-INVITE is other"),
    pytest.param(
        [INVITE] * 3 + [REGISTER] * 2 + [OPTIONS] * 2 + [ACK] * 2,
        [None] * 9,
        id="each class its own budget",
    ),
]


@pytest.mark.parametrize(("messages", "verdicts"), RATE_CASES)
def test_rate_budgets_per_class(messages: list[Request], verdicts: list[str | None]) -> None:
    adm = admission()
    found = [adm.check(m, PHONE, PUBLIC, 0.0) for m in messages]
    assert [None if v is None else v.reason for v in found] == verdicts


def flood(adm: Admission, host: str, now: float) -> float | None:
    """INVITEs from ``host`` at ``now`` until one is refused; the length of the ban it got."""
    for _ in range(10):
        if adm.check(INVITE, host, PUBLIC, now) is not None:
            event = adm.events[-1]
            assert isinstance(event, SourceBanned)
            assert event.reason == "rate"
            return event.until - now
    return None


# (times one phone floods, the ban lengths)
DOUBLING_CASES = [
    pytest.param([0, 60, 180, 420, 900], [60, 120, 240, 480, 960], id="doubling"),
    pytest.param([0, 60, 180, 420, 900, 1860, 3780], [60 * 2**i for i in range(6)] + [3600]),
    pytest.param([0, 3600, 7200], [60, 60, 60], id="once an hour"),
    pytest.param([0, 60, 180 + 3 * 600], [60, 120, 60], id="decayed"),
]


@pytest.mark.parametrize(("times", "lengths"), DOUBLING_CASES)
def test_rate_bans_double_for_repeat_offenders(times: list[float], lengths: list[float]) -> None:
    adm = admission()
    found = []
    for now in times:
        adm.expire(now)
        found.append(flood(adm, PHONE, now))
    assert found == lengths
    assert [e.offences for e in adm.events if isinstance(e, SourceBanned)] == list(
        range(1, len(times) + 1)
    )


# (host, trusted)
TRUSTED_CASES = [
    pytest.param(PBX, True, id="a destination"),
    pytest.param("::ffff:192.0.2.10", True, id="a destination, ipv4-mapped"),
    pytest.param("172.20.1.1", True, id="a trusted network"),
    pytest.param(PHONE, False, id="a phone"),
    pytest.param("10.9.0.1", False, id="blocked"),
    pytest.param("pbx.example.com", False, id="a name"),
]


@pytest.mark.parametrize(("host", "trusted"), TRUSTED_CASES)
def test_is_trusted(host: str, trusted: bool) -> None:
    assert admission().is_trusted(host) is trusted


def test_destinations_and_trusted_sources_have_no_rate() -> None:
    adm = admission()
    for host in (PBX, "172.31.0.1"):
        assert [adm.check(INVITE, host, PUBLIC, 0.0) for _ in range(100)] == [None] * 100
    assert adm.sizes()["sources"] == 0


def test_rates_off() -> None:
    adm = admission(replace(SETTINGS, rate=RateSettings(enabled=False, invite=1)))
    assert [adm.check(INVITE, PHONE, PUBLIC, 0.0) for _ in range(10)] == [None] * 10


# ---- scanners -----------------------------------------------------------------------------------

REPLY = replace(
    SETTINGS,
    scanners=ScannerSettings(
        action="reply",
        from_patterns=(re.compile(r"@1\.1\.1\.1>"),),
        max_failed_users=3,
        max_register_failures=3,
    ),
)

# (request, verdict with scanners.action = "reply")
REPLY_CASES = [
    pytest.param(SCANNER, Verdict("scanner", 403, "User-Agent friendly-scanner"), id="UA"),
    pytest.param(
        request(from_=b"<sip:100@1.1.1.1>;tag=x"),
        Verdict("scanner", 403, r"From @1\.1\.1\.1>"),
        id="From",
    ),
    pytest.param(
        request("ACK", agent=b"sipvicious 0.3"),
        Verdict("scanner", None, "User-Agent sipvicious"),
        id="an ACK is never answered",
    ),
]


@pytest.mark.parametrize(("message", "verdict"), REPLY_CASES)
def test_a_scanner_is_answered_once_then_banned(message: Request, verdict: Verdict) -> None:
    adm = admission(REPLY)
    assert adm.check(message, PHONE, PUBLIC, 0.0) == verdict
    assert adm.events == [SourceBanned(PHONE, "scanner", 3600.0, 1)]
    assert adm.check(INVITE, PHONE, PUBLIC, 3599.0) == Verdict("banned", None)
    assert adm.check(INVITE, PHONE, PUBLIC, 3600.0) is None
    assert adm.drops == {"scanner": 1, "banned": 1}


def test_scanners_off() -> None:
    adm = admission(replace(SETTINGS, scanners=ScannerSettings(enabled=False)))
    assert adm.check(SCANNER, PHONE, PUBLIC, 0.0) is None
    for i in range(50):
        adm.final_answer(request(to=b"<sip:%d@x>" % i), PHONE, 404, 0.0)
    assert adm.events == []


def to(user: int) -> bytes:
    return b"<sip:%d@example.com>" % user


# (final answers as (method, To user, status), the ban reason, or None)
ANSWER_CASES = [
    pytest.param([("INVITE", u, 404) for u in range(3)], None, id="three users refused"),
    pytest.param([("OPTIONS", u, 404) for u in range(4)], "enumeration", id="four users"),
    pytest.param([("REGISTER", u, 403) for u in range(3)], "register-failures", id="guessing"),
    pytest.param(
        [("REGISTER", 1, 403), ("REGISTER", 1, 403), ("REGISTER", 1, 200), ("REGISTER", 1, 403)],
        None,
        id="a 2xx ends the run",
    ),
    pytest.param([("BYE", u, 404) for u in range(10)], None, id="BYE reveals no user"),
]


@pytest.mark.parametrize(("answers", "reason"), ANSWER_CASES)
def test_final_answers_reveal_scanners(
    answers: list[tuple[str, int, int]], reason: str | None
) -> None:
    adm = admission(REPLY)
    for i, (method, user, status) in enumerate(answers):
        adm.final_answer(request(method, to=to(user)), PHONE, status, i * 0.1)
    now = len(answers) * 0.1
    banned = [(e.host, e.reason) for e in adm.events if isinstance(e, SourceBanned)]
    assert banned == ([] if reason is None else [(PHONE, reason)])
    assert adm.is_banned(PHONE, now) is (reason is not None)


@pytest.mark.parametrize("host", [PBX, "172.16.0.1", "::ffff:192.0.2.10"])
def test_final_answers_to_trusted_sources_are_not_recorded(host: str) -> None:
    adm = admission(REPLY)
    for user in range(50):
        adm.final_answer(request("REGISTER", to=to(user)), host, 403, 0.0)
    assert adm.events == []
    assert adm.sizes()["watched"] == 0


# ---- bounds -------------------------------------------------------------------------------------

BOUNDED = replace(
    SETTINGS,
    rate=RateSettings(invite=1, max_sources=100),
    scanners=ScannerSettings(max_failed_users=1000),
)


def test_tables_stay_bounded_under_ten_times_max_sources() -> None:
    adm = admission(BOUNDED)
    for i in range(1000):
        host = f"198.18.{i // 256}.{i % 256}"
        now = i * 0.0001
        adm.check(INVITE, host, PUBLIC, now)
        adm.final_answer(request("REGISTER", to=to(i)), host, 403, now)
        sizes = adm.sizes()
        assert sizes["sources"] <= 100
        assert sizes["watched"] <= 100
    for i in range(1000):
        host = f"198.19.{i // 256}.{i % 256}"
        adm.check(INVITE, host, PUBLIC, 1.0)
        adm.check(INVITE, host, PUBLIC, 1.0)  # over budget: banned
        sizes = adm.sizes()
        assert sizes["scores"] <= 100
        assert sizes["bans"] <= 200
    assert adm.sizes()["bans"] == 200


def test_expire_forgets_idle_sources() -> None:
    adm = admission()
    adm.check(INVITE, PHONE, PUBLIC, 0.0)
    adm.final_answer(INVITE, PHONE, 404, 0.0)
    assert (adm.sizes()["sources"], adm.sizes()["watched"]) == (1, 1)
    adm.expire(10.0)
    assert (adm.sizes()["sources"], adm.sizes()["watched"]) == (0, 0)
