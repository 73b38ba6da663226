"""name-addr / addr-spec values (RFC 3261 20.10, 25.1) and the hot-path ``tag_of``."""

from __future__ import annotations

import pytest

from siplb.sip import NameAddr, ParseError, SipUri, parse_name_addr, tag_of

# (id, value, expected)
VALID_CASES: list[tuple[str, bytes, NameAddr]] = [
    ("bracketed", b"<sip:a@b>", NameAddr(b"sip:a@b")),
    ("tag", b"<sip:a@b>;tag=1928", NameAddr(b"sip:a@b", None, {"tag": "1928"})),
    ("token display", b"Bob <sip:bob@b>", NameAddr(b"sip:bob@b", b"Bob")),
    (
        "token display, several tokens",
        b"Bob  the  Builder <sip:bob@b>",
        NameAddr(b"sip:bob@b", b"Bob  the  Builder"),
    ),
    (
        "token display without LWS (RFC 4475 3.1.1.6)",
        b"caller<sip:caller@example.com>;tag=323",
        NameAddr(b"sip:caller@example.com", b"caller", {"tag": "323"}),
    ),
    ("quoted display", b'"Alice Smith" <sip:a@b>', NameAddr(b"sip:a@b", b"Alice Smith")),
    ("quoted display without LWS", b'"A"<sip:a@b>', NameAddr(b"sip:a@b", b"A")),
    (
        "quoted with escapes (RFC 4475 3.1.1.1)",
        b'"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
        NameAddr(b"sip:jdrosen@example.com", b'J Rosenberg \\"'),
    ),
    ("quoted with comma and <>", b'"Doe, <John>" <sip:j@d>', NameAddr(b"sip:j@d", b"Doe, <John>")),
    ("quoted empty", b'"" <sip:a@b>', NameAddr(b"sip:a@b", b"")),
    ("quoted UTF-8", '"Jürgen" <sip:j@d>'.encode(), NameAddr(b"sip:j@d", "Jürgen".encode())),
    (
        "quoted controls as quoted-pairs (RFC 4475 3.1.1.2)",
        b'"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:a@b>',
        NameAddr(b"sip:a@b", b"BEL:\x07 NUL:\x00 DEL:\x7f"),
    ),
    ("bare addr-spec", b"sip:a@b", NameAddr(b"sip:a@b", None, {}, bracketed=False)),
    (
        "bare with header params",
        b"sip:a@b;tag=x;user=phone",
        NameAddr(b"sip:a@b", None, {"tag": "x", "user": "phone"}, bracketed=False),
    ),
    (
        "bare with LWS before params",
        b"sip:a@b ;   tag    = 1918181833n",
        NameAddr(b"sip:a@b", None, {"tag": "1918181833n"}, bracketed=False),
    ),
    (
        "uri params stay in the URI",
        b"<sip:a@b;transport=tcp;lr>;expires=60",
        NameAddr(b"sip:a@b;transport=tcp;lr", None, {"expires": "60"}),
    ),
    (
        "uri headers",
        b"<sip:user@example.com?Route=%3Csip:sip.example.com%3E>",
        NameAddr(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
    ),
    (
        "params with LWS and folding",
        b'"Q" <sip:j@e> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33',
        NameAddr(b"sip:j@e", b"Q", {"newparam": "newvalue", "secondparam": None, "q": "0.33"}),
    ),
    (
        "quoted param value",
        b'<sip:a@b>;x="1;tag=2";tag=3',
        NameAddr(b"sip:a@b", None, {"x": "1;tag=2", "tag": "3"}),
    ),
    ("other scheme", b"<tel:+15551234567>", NameAddr(b"tel:+15551234567")),
    (
        "opaque scheme bare",
        b"isbn:2983792873",
        NameAddr(b"isbn:2983792873", None, {}, bracketed=False),
    ),
    ("surrounding LWS", b"  <sip:a@b>  ", NameAddr(b"sip:a@b")),
    ("upper-case tag name", b"<sip:a@b>;TAG=X1", NameAddr(b"sip:a@b", None, {"tag": "X1"})),
]


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_name_addr(value: bytes, expected: NameAddr) -> None:
    assert parse_name_addr(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_name_addr_round_trip(value: bytes, expected: NameAddr) -> None:
    assert parse_name_addr(expected.to_bytes()) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_tag_of_agrees_with_the_full_parse(value: bytes, expected: NameAddr) -> None:
    tag = tag_of(value.replace(b"\r\n", b" ").strip())
    assert tag == (None if expected.tag is None else expected.tag.encode("latin-1"))


INVALID_CASES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("blank", b"   "),
    ("unterminated quote (RFC 4475 3.1.2.6)", b'"Mr. J. User <sip:j.user@example.com>'),
    ("quote not followed by <", b'"A" sip:a@b'),
    ("non-token display (RFC 4475 3.1.2.15)", b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43"),
    ("spaces in addr-spec (RFC 4475 3.1.2.14)", b'"Watson, Thomas" < sip:t.watson@example.org >'),
    ("missing >", b"<sip:a@b"),
    ("empty brackets", b"<>"),
    ("bare with ? (RFC 4475 3.1.2.13)", b"sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
    ("bare with comma", b"sip:a@b,c"),
    ("empty params (RFC 4475 3.1.2.1)", b'"Joe" <sip:joe@example.org>;;;;'),
    ("garbage after >", b"<sip:a@b>x"),
    ("no scheme", b"<a@b>"),
    ("malformed SIP URI", b"<sip:a@b:99999>"),
    ("< inside", b"<sip:a<b>"),
    ("non-ASCII in URI", "<sip:é@b>".encode()),
    ("bare with space", b"sip:a @b"),
]


@pytest.mark.parametrize("value", [c[1] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES])
def test_invalid_name_addr(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(value)


TAG_CASES: list[tuple[str, bytes, bytes | None]] = [
    ("none", b"<sip:a@b>", None),
    ("bare, none", b"sip:a@b", None),
    ("tag in the URI is not the header's", b"<sip:a@b;tag=inside>", None),
    ("tag in the URI and outside", b"<sip:a@b;tag=inside>;tag=outside", b"outside"),
    ("tag in a quoted display name", b'"x;tag=no" <sip:a@b>;tag=yes', b"yes"),
    ("> in a quoted display name", b'"a>b;tag=no" <sip:a@b>', None),
    ("tag in a quoted value", b'<sip:a@b>;x=";tag=no"', None),
    ("tagged", b"<sip:a@b>;foo=1;tag=t1;bar", b"t1"),
    ("upper case", b"<sip:a@b>;TAG=T2", b"T2"),
    ("LWS", b"<sip:a@b> ; tag = t3 ; x", b"t3"),
    ("tagx is another param", b"<sip:a@b>;tagx=1;tag=t4", b"t4"),
    ("unterminated display", b'"abc <sip:a@b>;tag=1', None),
    ("unclosed <", b"<sip:a@b;tag=1", None),
    ("display then no <", b'"abc" sip:a@b;tag=1', None),
]


@pytest.mark.parametrize(
    ("value", "tag"), [c[1:] for c in TAG_CASES], ids=[c[0] for c in TAG_CASES]
)
def test_tag_of(value: bytes, tag: bytes | None) -> None:
    assert tag_of(value) == tag


def test_parsed_uri() -> None:
    uri = parse_name_addr(b"Bob <sip:bob@b:5070;transport=tcp>;tag=1").parsed_uri()
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port, uri.transport) == ("b", 5070, "tcp")


def test_bare_to_bytes_keeps_its_form() -> None:
    assert NameAddr(b"sip:a@b", None, {"tag": "1"}, bracketed=False).to_bytes() == b"sip:a@b;tag=1"
    assert NameAddr(b"sip:a@b;lr", None, {}, bracketed=False).to_bytes() == b"<sip:a@b;lr>"
    assert NameAddr(b"sip:a@b", b'say "hi"').to_bytes() == b'"say \\"hi\\"" <sip:a@b>'
