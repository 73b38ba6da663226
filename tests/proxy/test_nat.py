"""Contact aliases (Kamailio's add_contact_alias / handle_ruri_alias format: ip~port~proto)."""

from __future__ import annotations

import pytest

from siplb.proxy.actions import Target
from siplb.proxy.nat import add_contact_alias, ruri_alias
from siplb.sip import ParseError, Request, parse

from .harness import build_request

SOURCE = Target("udp", "198.51.100.7", 40000)

# (case, Contact value, aliased Contact value or None when it must stay as it is)
CONTACT_CASES = [
    (
        "private",
        b"<sip:a@192.168.1.10:5060>",
        b"<sip:a@192.168.1.10:5060;alias=198.51.100.7~40000~1>",
    ),
    ("bare-addr-spec", b"sip:a@192.168.1.10", b"<sip:a@192.168.1.10;alias=198.51.100.7~40000~1>"),
    (
        "with-params",
        b'"A" <sip:a@10.0.0.9;ob>;+sip.instance="<urn:x>"',
        b'"A" <sip:a@10.0.0.9;ob;alias=198.51.100.7~40000~1>;+sip.instance="<urn:x>"',
    ),
    ("same-as-source", b"<sip:a@198.51.100.7:40000>", None),
    ("already-aliased", b"<sip:a@10.0.0.9;alias=1.2.3.4~5~1>", None),
    ("not-sip", b"<tel:+15551234>", None),
]


def _request(contact: bytes, uri: bytes = b"sip:b@example.com") -> Request:
    data = build_request(
        "INVITE",
        uri,
        [
            (b"Via", b"SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK1"),
            (b"From", b"<sip:a@example.com>;tag=1"),
            (b"To", b"<sip:b@example.com>"),
            (b"Call-ID", b"c"),
            (b"CSeq", b"1 INVITE"),
            (b"Contact", contact),
        ],
    )
    request = parse(data)
    assert isinstance(request, Request)
    return request


@pytest.mark.parametrize(
    ("contact", "expected"), [c[1:] for c in CONTACT_CASES], ids=[c[0] for c in CONTACT_CASES]
)
def test_add_contact_alias(contact: bytes, expected: bytes | None) -> None:
    out = add_contact_alias(_request(contact), SOURCE)
    assert out.values(b"contact") == [expected or contact]


# (case, Request-URI, (stripped URI, target) or the ParseError expected)
RURI_CASES = [
    ("udp", b"sip:a@10.0.0.9;alias=198.51.100.7~40000~1", (b"sip:a@10.0.0.9", SOURCE)),
    (
        "tls-keeps-other-params",
        b"sip:a@10.0.0.9;transport=tls;alias=198.51.100.7~5061~3",
        (b"sip:a@10.0.0.9;transport=tls", Target("tls", "198.51.100.7", 5061)),
    ),
    (
        "ipv6",
        b"sip:a@10.0.0.9;alias=2001:db8::1~5060~2",
        (b"sip:a@10.0.0.9", Target("tcp", "2001:db8::1", 5060)),
    ),
    ("no-alias", b"sip:a@10.0.0.9", None),
    ("bad-proto", b"sip:a@10.0.0.9;alias=1.2.3.4~5060~9", ParseError),
    ("bad-port", b"sip:a@10.0.0.9;alias=1.2.3.4~70000~1", ParseError),
    ("no-port", b"sip:a@10.0.0.9;alias=1.2.3.4~1", ParseError),
]


@pytest.mark.parametrize(
    ("uri", "expected"), [c[1:] for c in RURI_CASES], ids=[c[0] for c in RURI_CASES]
)
def test_ruri_alias(uri: bytes, expected: object) -> None:
    request = _request(b"<sip:a@10.0.0.9>", uri)
    if expected is ParseError:
        with pytest.raises(ParseError):
            ruri_alias(request)
        return
    found = ruri_alias(request)
    if expected is None:
        assert found is None
        return
    assert found is not None
    stripped, target = found
    assert (stripped.uri, target) == expected
    assert target.flow
