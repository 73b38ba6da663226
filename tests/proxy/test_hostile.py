"""Bad input never costs a call: every field of a request and a response, broken, through the
core's real receive path (``Proxy.receive``), with Hypothesis.

Invariants, for any input: no exception; the proxy sends only to the message's source or to a
destination (never to an address the message names); a refused request gets at most one answer
per copy received and leaves no transaction behind; and a real call placed afterwards works.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siplb.proxy.actions import Target
from siplb.settings import LimitsSettings, ProtectionSettings, RateSettings, ScannerSettings

from .harness import UAC, Lab, Script, make_lab

SOURCE = Target("udp", "127.0.0.9", 5000)
DESTINATIONS = {("127.0.0.1", 5070), ("127.0.0.1", 5071)}

FRAGMENTS = [
    b"",
    b";",
    b";branch",
    b";branch=",
    b";tag",
    b";tag=",
    b"<",
    b">",
    b"sip:",
    b"sip:x@127.0.0.50:5060",
    b"<sip:127.0.0.50;lr>",
    b";alias=127.0.0.50~5060~1",
    b"@",
    b":",
    b"[::1",
    b";rport=x",
    b";received=",
    b";maddr=127.0.0.50",
    b";transport=sctp",
    b" , ",
    b"\xff\xfe",
    b"-1",
    b"99999999999999999999",
    b"0",
    b"1 ACK",
    b"1 CANCEL",
    b"INVITE",
    b"SIP/3.0",
    b"\t",
    b"\r\n ",
]

REQUEST_FIELDS = [
    "method",
    "uri",
    "version",
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Contact",
    "Route",
    "Record-Route",
    "Content-Length",
    "Proxy-Require",
]
RESPONSE_FIELDS = ["status", "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Length"]

value = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)), min_size=1, max_size=4
).map(b"".join)


def _request(fields: dict[str, bytes], method: bytes, to_tag: bool, n: int) -> bytes:
    parts = {
        "method": method,
        "uri": b"sip:bob@127.0.0.1:5060",
        "version": b"SIP/2.0",
        "Via": b"SIP/2.0/UDP 127.0.0.9:5000;branch=z9hG4bKh%d;rport" % n,
        "From": b"<sip:alice@example.com>;tag=f%d" % n,
        "To": b"<sip:bob@example.com>" + (b";tag=t1" if to_tag else b""),
        "Call-ID": b"hostile-%d@example.com" % n,
        "CSeq": b"1 " + method,
        "Max-Forwards": b"70",
        "Contact": b"<sip:alice@127.0.0.9:5000>",
        "Route": b"<sip:127.0.0.1:5060;lr>",
        "Record-Route": b"<sip:127.0.0.9:5000;lr>",
        "Content-Length": b"0",
        "Proxy-Require": None,
    }
    parts.update(fields)
    lines = [b"%s %s %s" % (parts["method"], parts["uri"], parts["version"])]
    lines.extend(
        name.encode() + b": " + value
        for name in REQUEST_FIELDS[3:]
        if (value := parts.get(name)) is not None
    )
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _response(fields: dict[str, bytes], branch: bytes) -> bytes:
    parts = {
        "status": b"200 OK",
        "Via": b"SIP/2.0/UDP 127.0.0.1:5060;branch=" + branch,
        "From": b"<sip:alice@example.com>;tag=f1",
        "To": b"<sip:bob@example.com>;tag=t1",
        "Call-ID": b"hostile-r@example.com",
        "CSeq": b"1 INVITE",
        "Contact": b"<sip:bob@127.0.0.1:5070>",
        "Content-Length": b"0",
    }
    parts.update(fields)
    lines = [b"SIP/2.0 " + parts["status"]]
    lines.extend(name.encode() + b": " + parts[name] for name in RESPONSE_FIELDS[1:])
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _lab(scripts: list[Script | None] | None = None) -> Lab:
    return make_lab(
        scripts or 2,
        protection=ProtectionSettings(
            rate=RateSettings(enabled=False), scanners=ScannerSettings(enabled=False)
        ),
        caps=LimitsSettings(),
    )


def _check_sends(lab: Lab) -> None:
    for wire in lab.net.wire:
        if wire.source != "proxy":
            continue
        to = (wire.target.host, wire.target.port)
        assert to in DESTINATIONS or to == (SOURCE.host, SOURCE.port), to


def _a_call_still_works(lab: Lab) -> None:
    caller = UAC("caller", Target("udp", "127.0.0.7", 5000))
    lab.net.add(caller)
    call = caller.call()
    call.invite()
    lab.net.run(lab.clock.now + 1.0)
    assert 200 in call.statuses


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    broken=st.dictionaries(st.sampled_from(REQUEST_FIELDS), value, min_size=1, max_size=3),
    method=st.sampled_from([b"INVITE", b"ACK", b"BYE", b"CANCEL", b"REGISTER", b"OPTIONS"]),
    to_tag=st.booleans(),
    repeat=st.booleans(),
)
def test_broken_requests_never_hurt(
    broken: dict[str, bytes], method: bytes, to_tag: bool, repeat: bool
) -> None:
    lab = _lab()
    data = _request(broken, method, to_tag, 1)
    copies = 2 if repeat else 1
    for _ in range(copies):
        lab.proxy.receive(data, SOURCE, 0, lab.clock.now)
    lab.net.run(40.0)  # every timer (G, H, J ...) has run out
    _check_sends(lab)
    answers = [w for w in lab.net.wire if w.source == "proxy" and w.target.port == SOURCE.port]
    forwarded = [w for w in lab.net.wire if w.source == "proxy" and w.target.port != SOURCE.port]
    if not forwarded:  # refused: one answer per copy at most, never retransmitted
        assert len(answers) <= copies
    _a_call_still_works(lab)


@settings(max_examples=200, deadline=None)
@given(broken=st.dictionaries(st.sampled_from(RESPONSE_FIELDS), value, min_size=1, max_size=3))
def test_broken_responses_never_hurt(broken: dict[str, bytes]) -> None:
    lab = _lab(
        [Script(invite=(100,)), Script(invite=(100,))]
    )  # the destinations only say Trying: the INVITE stays pending
    caller = UAC("caller", SOURCE)
    lab.net.add(caller)
    call = caller.call()
    call.invite()
    lab.net.run(0.01)
    (invite,) = lab.uas[0].invites + lab.uas[1].invites
    branch = invite.top_via().branch or ""
    lab.proxy.receive(_response(broken, branch.encode()), Target("udp", "127.0.0.1", 5070), 0, 0.02)
    lab.net.run(40.0)
    _check_sends(lab)
    for uas in lab.uas:
        uas.script = Script()
    _a_call_still_works(lab)


@pytest.mark.parametrize("malformed", ["reply", "drop"])
def test_a_malformed_invite_is_answered_once_or_not_at_all(malformed: str) -> None:
    lab = make_lab(2, protection=ProtectionSettings(), caps=LimitsSettings(malformed=malformed))  # type: ignore[arg-type]
    data = _request({"CSeq": b"x INVITE"}, b"INVITE", False, 1)
    lab.proxy.receive(data, SOURCE, 0, 0.0)
    lab.net.run(40.0)
    answers = [w for w in lab.net.wire if w.source == "proxy"]
    assert [w.message.status for w in answers] == ([400] if malformed == "reply" else [])  # type: ignore[union-attr]
    assert lab.proxy.stats["refused:malformed"] == 1
    assert lab.proxy.transactions == 0


@pytest.mark.parametrize(("malformed", "answers"), [("reply", [400]), ("drop", [])])
def test_a_via_branch_without_value_is_answered_once_and_counted(
    malformed: str, answers: list[int]
) -> None:
    caps = LimitsSettings(malformed=malformed)  # type: ignore[arg-type]
    lab = make_lab(2, protection=ProtectionSettings(), caps=caps)
    via = b"SIP/2.0/UDP 127.0.0.9:5000;branch"
    data = _request({"Via": via, "CSeq": b"x INVITE"}, b"INVITE", False, 1)
    lab.proxy.receive(data, SOURCE, 0, 0.0)
    lab.proxy.receive(data, SOURCE, 0, 0.1)
    lab.net.run(40.0)
    sent = [w for w in lab.net.wire if w.source == "proxy"]
    assert [w.message.status for w in sent] == answers * 2  # type: ignore[union-attr]
    assert {(w.target.host, w.target.port) for w in sent} <= {(SOURCE.host, SOURCE.port)}
    assert lab.proxy.stats["refused:malformed"] == 2


def test_the_ack_of_a_stateless_answer_is_absorbed() -> None:
    lab = _lab()
    data = _request({"Max-Forwards": b"0"}, b"INVITE", False, 7)
    lab.proxy.receive(data, SOURCE, 0, 0.0)
    lab.net.run(0.1)
    (answer,) = [w.message for w in lab.net.wire if w.source == "proxy"]
    assert answer.status == 483  # type: ignore[union-attr]
    to = answer.get(b"to") or b""
    ack = _request({"To": to, "Max-Forwards": b"70"}, b"ACK", False, 7)
    lab.proxy.receive(ack, SOURCE, 0, 0.2)
    lab.net.run(1.0)
    assert lab.proxy.stats["acks_absorbed"] == 1
    assert len([w for w in lab.net.wire if w.source == "proxy"]) == 1
