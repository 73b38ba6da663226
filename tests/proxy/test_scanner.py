"""Scanner signatures and guessing in final answers (siplb.proxy.scanner)."""

from __future__ import annotations

import re

import pytest

from siplb.proxy.scanner import (
    ENUMERATION,
    REGISTER_FAILURES,
    USER_MAX_BYTES,
    FailureWatch,
    Signatures,
    to_user,
)
from siplb.settings import ScannerSettings
from siplb.sip import Request, parse

SOURCE = "203.0.113.7"


def request(
    method: str = "INVITE",
    *,
    to: bytes = b"<sip:100@example.com>",
    agent: bytes | None = None,
    from_: bytes = b'"Alice" <sip:alice@example.com>;tag=a1',
    extra: tuple[bytes, ...] = (),
) -> Request:
    lines = [
        b"%s sip:100@example.com SIP/2.0" % method.encode(),
        b"Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bKscan1",
        b"Max-Forwards: 70",
        b"From: " + from_,
        b"To: " + to,
        b"Call-ID: scan-1@example.com",
        b"CSeq: 1 " + method.encode(),
        *([b"User-Agent: " + agent] if agent is not None else []),
        *extra,
        b"Content-Length: 0",
    ]
    message = parse(b"\r\n".join(lines) + b"\r\n\r\n")
    assert isinstance(message, Request)
    return message


# (User-Agent, From, the detail, or None)
SIGNATURE_CASES = [
    pytest.param(b"friendly-scanner", None, "User-Agent friendly-scanner", id="svmap"),
    pytest.param(b"Friendly-Scanner 1.2", None, "User-Agent friendly-scanner", id="any case"),
    pytest.param(b"sipcli/v1.8", None, "User-Agent sipcli", id="sipcli"),
    pytest.param(b"X iwar Y", None, "User-Agent iWar", id="configured spelling reported"),
    pytest.param(b"VaxSIPUserAgent/3.1", None, "User-Agent vaxsipuseragent", id="vax"),
    pytest.param(b"Yealink SIP-T46S 66.86.0.15", None, None, id="a phone"),
    pytest.param(None, None, None, id="no User-Agent"),
    pytest.param(b"", None, None, id="empty User-Agent"),
    pytest.param(None, b"<sip:100@1.1.1.1>;tag=x", "From ^<sip:100@1\\.1\\.1\\.1>", id="From"),
    pytest.param(None, b'"sipvicious" <sip:a@b>;tag=x', "From sipvicious", id="From by name"),
    pytest.param(b"Yealink", b"<sip:alice@example.com>;tag=x", None, id="clean From"),
]
SCANNERS = ScannerSettings(
    from_patterns=(re.compile(r"^<sip:100@1\.1\.1\.1>"), re.compile("sipvicious"))
)


@pytest.mark.parametrize(("agent", "from_", "detail"), SIGNATURE_CASES)
def test_signatures(agent: bytes | None, from_: bytes | None, detail: str | None) -> None:
    signatures = Signatures(SCANNERS)
    message = request(agent=agent) if from_ is None else request(agent=agent, from_=from_)
    assert signatures.match(message) == detail
    assert signatures.match(message) == detail  # the cached verdict


def test_no_signatures_match_nothing() -> None:
    signatures = Signatures(ScannerSettings(user_agents=(), from_patterns=()))
    assert signatures.match(request(agent=b"friendly-scanner")) is None


# (To value, the user)
TO_USER_CASES = [
    pytest.param(b"<sip:100@example.com>", b"100", id="sip"),
    pytest.param(b"sip:%31%30%30@example.com", b"100", id="escaped, bare"),
    pytest.param(b'"Bob" <sips:bob@example.com;transport=tls>', b"bob", id="sips"),
    pytest.param(b"<sip:example.com>", None, id="no user"),
    pytest.param(b"<tel:+15551234567>", b"tel:+15551234567", id="tel"),
    pytest.param(b"<sip:" + b"9" * 200 + b"@example.com>", b"9" * USER_MAX_BYTES, id="cut"),
    pytest.param(b"<sip:@>", None, id="malformed"),
]


@pytest.mark.parametrize(("to", "user"), TO_USER_CASES)
def test_to_user(to: bytes, user: bytes | None) -> None:
    assert to_user(request(to=to)) == user


def refusals(watch: FailureWatch, users: list[bytes], status: int, now: float) -> list[str]:
    found: list[str] = []
    for i, user in enumerate(users):
        to = b"<sip:" + user + b"@example.com>"
        detection = watch.final_answer(SOURCE, request(to=to), status, now + i * 0.01)
        if detection is not None:
            found.append(detection.reason)
    return found


ENUMERATION_SETTINGS = ScannerSettings(max_failed_users=3, failed_users_window=10.0)

# (final answers as (user, status, now), index of the answer that is found to be enumeration)
ENUMERATION_CASES = [
    pytest.param([(b"1", 404, 0), (b"2", 404, 0), (b"3", 404, 0)], None, id="at the limit"),
    pytest.param([(b"1", 404, 0), (b"2", 403, 0), (b"3", 401, 0), (b"4", 484, 0)], 3, id="over"),
    pytest.param([(b"1", 404, 0), (b"1", 404, 0), (b"1", 404, 0), (b"1", 404, 0)], None, id="same"),
    pytest.param([(b"1", 404, 0), (b"2", 404, 0), (b"3", 404, 0), (b"4", 404, 10)], None, id="old"),
    pytest.param([(b"1", 404, 0), (b"2", 404, 0), (b"3", 407, 9), (b"4", 485, 9.9)], 3, id="in"),
    pytest.param([(b"1", 486, 0), (b"2", 486, 0), (b"3", 480, 0), (b"4", 503, 0)], None, id="busy"),
    pytest.param(
        [(b"1", 401, 0), (b"1", 200, 0), (b"2", 401, 0), (b"3", 401, 0), (b"4", 401, 0)],
        None,
        id="a 2xx takes a user off the list",
    ),
]


@pytest.mark.parametrize(("answers", "found_at"), ENUMERATION_CASES)
def test_enumeration(answers: list[tuple[bytes, int, float]], found_at: int | None) -> None:
    watch = FailureWatch(ENUMERATION_SETTINGS, max_sources=100)
    detections = [
        watch.final_answer(SOURCE, request(to=b"<sip:" + user + b"@x>"), status, now)
        for user, status, now in answers
    ]
    found = [i for i, d in enumerate(detections) if d is not None]
    assert found == ([] if found_at is None else [found_at])
    if found_at is not None:
        detection = detections[found_at]
        assert detection is not None
        assert detection.reason == ENUMERATION


# (method, the methods that reveal users)
METHOD_CASES = [
    pytest.param("INVITE", True, id="INVITE"),
    pytest.param("REGISTER", True, id="REGISTER"),
    pytest.param("OPTIONS", True, id="OPTIONS"),
    pytest.param("SUBSCRIBE", True, id="SUBSCRIBE"),
    pytest.param("MESSAGE", True, id="MESSAGE"),
    pytest.param("BYE", False, id="BYE"),
    pytest.param("NOTIFY", False, id="NOTIFY"),
]


@pytest.mark.parametrize(("method", "counted"), METHOD_CASES)
def test_enumeration_by_method(method: str, counted: bool) -> None:
    watch = FailureWatch(ENUMERATION_SETTINGS, max_sources=100)
    found = [
        watch.final_answer(SOURCE, request(method, to=b"<sip:%d@x>" % i), 404, 0.0)
        for i in range(4)
    ]
    assert (found[-1] is not None) is counted


REGISTER_SETTINGS = ScannerSettings(max_register_failures=3, max_failed_users=1000)
AUTH = (b'Authorization: Digest username="100", realm="x", nonce="n", uri="sip:x", response="r"',)
PROXY_AUTH = (b'Proxy-Authorization: Digest username="100", realm="x", nonce="n", response="r"',)

# (answers to REGISTERs as (status, credentials sent), the indices found to be guessing)
REGISTER_CASES = [
    pytest.param([(403, ()), (403, ())], [], id="two refusals"),
    pytest.param([(403, ()), (404, ()), (403, ())], [2], id="three refusals"),
    pytest.param([(401, ())] * 5, [], id="challenges without credentials are normal"),
    pytest.param([(401, AUTH), (401, AUTH), (407, PROXY_AUTH)], [2], id="challenged again"),
    pytest.param([(403, ()), (403, ()), (200, AUTH), (403, ()), (403, ())], [], id="2xx resets"),
    pytest.param([(403, ()), (403, ()), (486, ()), (403, ())], [3], id="others do not reset"),
    pytest.param([(403, ())] * 6, [2, 5], id="the run starts again after a detection"),
]


@pytest.mark.parametrize(("answers", "found_at"), REGISTER_CASES)
def test_register_failures_in_a_row(
    answers: list[tuple[int, tuple[bytes, ...]]], found_at: list[int]
) -> None:
    watch = FailureWatch(REGISTER_SETTINGS, max_sources=100)
    detections = [
        watch.final_answer(SOURCE, request("REGISTER", extra=extra), status, float(i))
        for i, (status, extra) in enumerate(answers)
    ]
    found = [(i, d.reason) for i, d in enumerate(detections) if d is not None]
    assert found == [(i, REGISTER_FAILURES) for i in found_at]


def test_a_run_is_forgotten_after_an_hour_of_silence() -> None:
    watch = FailureWatch(REGISTER_SETTINGS, max_sources=100)
    for now in (0.0, 1.0):
        assert watch.final_answer(SOURCE, request("REGISTER"), 403, now) is None
    watch.expire(3600.0)
    assert watch.tracked == 1
    watch.expire(3601.0)
    assert watch.tracked == 0
    assert watch.final_answer(SOURCE, request("REGISTER"), 403, 3602.0) is None


def test_a_user_list_is_forgotten_after_the_window() -> None:
    watch = FailureWatch(ENUMERATION_SETTINGS, max_sources=100)
    refusals(watch, [b"1", b"2"], 404, 0.0)
    watch.expire(9.0)
    assert watch.tracked == 1
    watch.expire(10.02)
    assert watch.tracked == 0


def test_watched_sources_and_users_are_bounded() -> None:
    watch = FailureWatch(ScannerSettings(max_failed_users=5), max_sources=20)
    for i in range(200):
        key = f"10.0.0.{i}"
        watch.final_answer(key, request("REGISTER", to=b"<sip:%d@x>" % i), 403, i * 0.001)
        assert watch.tracked <= 20
    assert refusals(watch, [b"%d" % i for i in range(100)], 404, 1.0) == [ENUMERATION] * 16
    assert max(len(users) for users in watch._failed.values()) <= 6
