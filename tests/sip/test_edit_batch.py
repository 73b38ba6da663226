"""``Edit``: several changes made in one copy give the bytes the one-at-a-time edits give.

The proxy builds each forwarded request with one ``Edit`` (RFC 3261 16.6 steps 2-8); these cases
hold it to the ``with_*`` methods it replaces, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from siplb.sip import Edit, LocalProtocolError, Message, Request, parse

from .samples import INVITE, RINGING

START = b"OPTIONS sip:a@example.com SIP/2.0"


def msg(*lines: bytes, start: bytes = START, body: bytes = b"") -> bytes:
    return b"\r\n".join([start, *lines]) + b"\r\n\r\n" + body


Steps = Callable[[Edit[Message]], None]
OneByOne = Callable[[Message], Message]

ROUTED = msg(
    b"Via: SIP/2.0/UDP a;branch=z9hG4bK1",
    b"Route: <sip:lb;lr>, <sip:lb2;lr>",
    b"route: <sip:next;lr>",
    b"Max-Forwards: 70",
    b"Content-Length: 0",
)


def _pop_route(count: int) -> OneByOne:
    def edit(m: Message) -> Message:
        for _ in range(count):
            m = m.without_top_value(b"route")
        return m

    return edit


def _set_uri(edit: Edit[Message]) -> None:
    edit.set_uri(b"sip:b@example.com")


def _with_uri(m: Message) -> Message:
    assert isinstance(m, Request)
    return m.with_uri(b"sip:b@example.com")


# (id, original, the edit's steps, the same with one-at-a-time edits)
CASES: list[tuple[str, bytes, Steps, OneByOne]] = [
    (
        "nothing",
        ROUTED,
        lambda e: None,
        lambda m: m,
    ),
    (
        "lines on top, the last added on top",
        ROUTED,
        lambda e: (e.add_first(b"Record-Route", b"<sip:lb;lr>"), e.add_first(b"Via", b"v2")),
        lambda m: m.with_header_first(b"Record-Route", b"<sip:lb;lr>").with_header_first(
            b"Via", b"v2"
        ),
    ),
    (
        "a value replaced",
        ROUTED,
        lambda e: e.set(b"Max-Forwards", b"69"),
        lambda m: m.with_header(b"Max-Forwards", b"69"),
    ),
    (
        "a header added at the end",
        ROUTED,
        lambda e: e.set(b"Subject", b"hi"),
        lambda m: m.with_header(b"Subject", b"hi"),
    ),
    (
        "every line of a header removed",
        ROUTED,
        lambda e: e.remove(b"Route"),
        lambda m: m.without_header(b"route"),
    ),
    ("one Route value of a list line", ROUTED, lambda e: e.pop_top_values(b"route"), _pop_route(1)),
    (
        "a whole Route line",
        ROUTED,
        lambda e: e.pop_top_values(b"Route", 2),
        _pop_route(2),
    ),
    (
        "Route values across lines",
        ROUTED,
        lambda e: e.pop_top_values(b"route", 3),
        _pop_route(3),
    ),
    ("the Request-URI", ROUTED, _set_uri, _with_uri),
    (
        "a proxy's whole edit of a request",
        ROUTED,
        lambda e: (
            e.pop_top_values(b"route", 2),
            e.set(b"Max-Forwards", b"69"),
            e.add_first(b"Record-Route", b"<sip:lb;lr>"),
            e.add_first(b"Via", b"SIP/2.0/UDP lb;branch=z9hG4bKx"),
        ),
        lambda m: (
            _pop_route(2)(m)
            .with_header(b"Max-Forwards", b"69")
            .with_header_first(b"Record-Route", b"<sip:lb;lr>")
            .with_header_first(b"Via", b"SIP/2.0/UDP lb;branch=z9hG4bKx")
        ),
    ),
    (
        "folded list line",
        msg(b"Via:\tSIP/2.0/UDP lb,\r\n   SIP/2.0/UDP a,\r\n SIP/2.0/UDP b", b"l: 0"),
        lambda e: e.pop_top_values(b"via"),
        lambda m: m.without_top_value(b"via"),
    ),
    (
        "comma inside a quoted parameter",
        msg(b'Via: SIP/2.0/UDP lb;x="1,2", SIP/2.0/UDP a'),
        lambda e: e.pop_top_values(b"v"),
        lambda m: m.without_top_value(b"via"),
    ),
    (
        "a message with a body",
        INVITE,
        lambda e: (e.set(b"Max-Forwards", b"9"), e.add_first(b"Via", b"SIP/2.0/UDP lb")),
        lambda m: m.with_header(b"Max-Forwards", b"9").with_header_first(b"Via", b"SIP/2.0/UDP lb"),
    ),
    (
        "a response",
        RINGING,
        lambda e: e.pop_top_values(b"via"),
        lambda m: m.without_top_value(b"via"),
    ),
]


@pytest.mark.parametrize(
    ("original", "steps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_one_copy_gives_the_bytes_of_the_edits_one_by_one(
    original: bytes, steps: Steps, expected: OneByOne
) -> None:
    message = parse(original)
    edit: Edit[Message] = Edit(message)
    steps(edit)
    out = edit.apply()
    want = expected(message)
    assert out.to_bytes() == want.to_bytes()
    assert out == want
    assert parse(out.to_bytes()) == out  # a consistent message: its typed views read its bytes
    assert message.to_bytes() == original.lstrip(b"\r\n")  # the original is left as it was


def test_nothing_changed_is_the_message_itself() -> None:
    message = parse(ROUTED)
    assert Edit(message).apply() is message


def test_empty_elements_do_not_count_as_values() -> None:
    # ``values`` leaves out empty elements; popping as many values as it lists pops the real ones
    message = parse(msg(b"Route: <sip:a;lr>,, <sip:b;lr>", b"Route: <sip:c;lr>"))
    assert message.values(b"route") == [b"<sip:a;lr>", b"<sip:b;lr>", b"<sip:c;lr>"]
    edit: Edit[Message] = Edit(message)
    edit.pop_top_values(b"route", 2)
    assert edit.apply().values(b"route") == [b"<sip:c;lr>"]


def test_replace_top_value_keeps_the_rest_of_the_line() -> None:
    message = parse(msg(b"Via: SIP/2.0/UDP a;rport, SIP/2.0/UDP b", b"Via: SIP/2.0/UDP c"))
    edit: Edit[Message] = Edit(message)
    edit.replace_top_value(b"via", b"SIP/2.0/UDP a;rport=5;received=1.2.3.4")
    out = edit.apply()
    assert [v.to_bytes() for v in out.vias()] == [
        b"SIP/2.0/UDP a;rport=5;received=1.2.3.4",
        b"SIP/2.0/UDP b",
        b"SIP/2.0/UDP c",
    ]


def test_a_copy_goes_its_own_way() -> None:
    edit: Edit[Message] = Edit(parse(ROUTED))
    edit.set(b"Max-Forwards", b"69")
    first, second = edit.copy(), edit.copy()
    first.add_first(b"Via", b"SIP/2.0/UDP one")
    second.add_first(b"Via", b"SIP/2.0/UDP two")
    assert first.apply().top_via().host == "one"
    assert second.apply().top_via().host == "two"
    assert edit.apply().top_via().host == "a"
    assert first.apply().max_forwards == second.apply().max_forwards == 69


# (id, original, steps, the header lines after the start line): ``add_top_value`` puts a new
# first element right above the header's first line, so a proxy's Via joins the others and a
# Record-Route or Path added on top never splits the Via rows (RFC 3261 16.6 steps 4, 8)
TOP_VALUE_CASES: list[tuple[str, bytes, Steps, list[bytes]]] = [
    (
        "Via first in the message",
        msg(b"Via: SIP/2.0/UDP a", b"Max-Forwards: 70"),
        lambda e: (
            e.add_top_value(b"Via", b"SIP/2.0/UDP lb"),
            e.add_first(b"Record-Route", b"<sip:lb;lr>"),
        ),
        [b"Record-Route: <sip:lb;lr>", b"Via: SIP/2.0/UDP lb", b"Via: SIP/2.0/UDP a"],
    ),
    (
        "Via below other lines, Record-Route added first",
        msg(b"Max-Forwards: 70", b"v: SIP/2.0/UDP a", b"Via: SIP/2.0/UDP b"),
        lambda e: (
            e.add_first(b"Record-Route", b"<sip:lb;lr>"),
            e.set(b"Max-Forwards", b"69"),
            e.add_top_value(b"Via", b"SIP/2.0/UDP lb"),
        ),
        [
            b"Record-Route: <sip:lb;lr>",
            b"Max-Forwards: 69",
            b"Via: SIP/2.0/UDP lb",
            b"v: SIP/2.0/UDP a",
            b"Via: SIP/2.0/UDP b",
        ],
    ),
    (
        "two values: the last added on top",
        msg(b"Via: SIP/2.0/UDP a"),
        lambda e: (
            e.add_top_value(b"Via", b"SIP/2.0/UDP 1"),
            e.add_top_value(b"Via", b"SIP/2.0/UDP 2"),
        ),
        [b"Via: SIP/2.0/UDP 2", b"Via: SIP/2.0/UDP 1", b"Via: SIP/2.0/UDP a"],
    ),
    (
        "no such header yet: on top",
        msg(b"Max-Forwards: 70"),
        lambda e: (
            e.add_first(b"Record-Route", b"<sip:lb;lr>"),
            e.add_top_value(b"Path", b"<sip:p>"),
        ),
        [b"Path: <sip:p>", b"Record-Route: <sip:lb;lr>", b"Max-Forwards: 70"],
    ),
    (
        "its first line removed",
        msg(b"Route: <sip:lb;lr>", b"Route: <sip:x;lr>", b"Subject: s"),
        lambda e: (e.pop_top_values(b"route"), e.add_top_value(b"Route", b"<sip:y;lr>")),
        [b"Route: <sip:y;lr>", b"Route: <sip:x;lr>", b"Subject: s"],
    ),
]


@pytest.mark.parametrize(
    ("original", "steps", "lines"),
    [c[1:] for c in TOP_VALUE_CASES],
    ids=[c[0] for c in TOP_VALUE_CASES],
)
def test_add_top_value_keeps_the_lines_of_a_header_together(
    original: bytes, steps: Steps, lines: list[bytes]
) -> None:
    message = parse(original)
    edit: Edit[Message] = Edit(message)
    steps(edit)
    out = edit.apply()
    header_lines = out.to_bytes().split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    assert header_lines[: len(lines)] == lines
    assert parse(out.to_bytes()) == out
    assert message.to_bytes() == original  # the original is left as it was
    copied = Edit(message)
    steps(copied)
    assert copied.copy().apply().to_bytes() == out.to_bytes()


MISUSES: list[tuple[str, bytes, Steps]] = [
    ("more values than there are", ROUTED, lambda e: e.pop_top_values(b"route", 4)),
    ("a value of a header that is not there", ROUTED, lambda e: e.replace_top_value(b"Path", b"x")),
    ("a line break in a value", ROUTED, lambda e: e.add_first(b"Via", b"a\r\nb")),
    ("not a header name", ROUTED, lambda e: e.set(b"Bad Name", b"x")),
    ("a Request-URI with white space", ROUTED, lambda e: e.set_uri(b"sip:a b")),
    ("a Request-URI for a response", RINGING, _set_uri),
]


@pytest.mark.parametrize(
    ("original", "steps"), [c[1:] for c in MISUSES], ids=[c[0] for c in MISUSES]
)
def test_misuse_is_a_local_protocol_error(original: bytes, steps: Steps) -> None:
    with pytest.raises(LocalProtocolError):
        steps(Edit(parse(original)))
