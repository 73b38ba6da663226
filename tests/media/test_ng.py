"""ng commands and replies (``siplb.media.ng``), as rtpengine reads and writes them."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.media import ng
from siplb.media.bencode import BencodeError, decode, encode

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"


def body(command: ng.Command, cookie: bytes = b"c1") -> Any:
    head, space, payload = command.datagram(cookie).partition(b" ")
    assert (head, space) == (cookie, b" ")
    return decode(payload)


def test_ping() -> None:
    assert ng.ping().datagram(b"5a_1") == b"5a_1 d7:command4:pinge"


def test_offer_carries_the_call_and_translated_options() -> None:
    command = ng.offer(
        "call-1@host",
        "ft",
        SDP,
        via_branch="z9hG4bK1",
        options=(
            "replace-origin",
            "replace-session-connection",
            "ICE=remove",
            "trust-address",
            "rtcp-mux-demux",
            "SDES-off",
            "transport-protocol=RTP/AVP",
            "symmetric",
        ),
        direction=("external", "internal"),
    )
    assert command.name == "offer"
    assert body(command) == {
        "command": b"offer",
        "call-id": b"call-1@host",
        "from-tag": b"ft",
        "via-branch": b"z9hG4bK1",
        "sdp": SDP,
        "replace": [b"origin", b"session-connection"],
        "ICE": b"remove",
        "rtcp-mux": [b"demux"],
        "SDES": [b"off"],
        "transport-protocol": b"RTP/AVP",
        "flags": [b"trust-address", b"symmetric"],
        "direction": [b"external", b"internal"],
    }


def test_an_offer_in_a_dialog_has_its_to_tag_and_no_empty_keys() -> None:
    decoded = body(ng.offer("c", "ft", SDP, to_tag="tt"))
    assert decoded == {
        "command": b"offer",
        "call-id": b"c",
        "from-tag": b"ft",
        "to-tag": b"tt",
        "sdp": SDP,
    }
    assert "direction" not in body(ng.offer("c", "ft", SDP, direction=("external", "")))


def test_answer_delete_query() -> None:
    assert body(ng.answer("c", "ft", "tt", SDP, options=("replace-origin",))) == {
        "command": b"answer",
        "call-id": b"c",
        "from-tag": b"ft",
        "to-tag": b"tt",
        "sdp": SDP,
        "replace": [b"origin"],
    }
    assert body(ng.delete("c", "ft")) == {"command": b"delete", "call-id": b"c", "from-tag": b"ft"}
    assert body(ng.delete("c")) == {"command": b"delete", "call-id": b"c"}
    assert body(ng.query("c")) == {"command": b"query", "call-id": b"c"}


@pytest.mark.parametrize("cookie", [b"", b"a b", b"x" * 65, b"caf\xc3\xa9"])
def test_a_bad_cookie_is_our_bug(cookie: bytes) -> None:
    with pytest.raises(ValueError, match="cookie"):
        ng.ping().datagram(cookie)


def test_a_call_needs_its_call_id() -> None:
    with pytest.raises(ValueError, match="call-id"):
        ng.delete("")


OPTION_CASES = [
    ("replace-origin", None),
    ("ICE=remove", None),
    ("trust-address", None),
    ("", "one word"),
    ("two words", "one word"),
    ("ICE=", "both parts"),
    ("=x", "both parts"),
    ("call-id=x", "set by siplb"),
    ("sdp=x", "set by siplb"),
    ("caf\u00e9", "one word"),
]


@pytest.mark.parametrize(("option", "problem"), OPTION_CASES)
def test_check_option(option: str, problem: str | None) -> None:
    found = ng.check_option(option)
    assert (found is None) if problem is None else (found is not None and problem in found)


REPLIES = [
    (b"k1 d6:result4:ponge", "pong", True, None),
    (b"k1 d6:result2:ok3:sdp3:v=0e", "ok", True, b"v=0"),
    (b"k1 d6:result5:error12:error-reason15:Unknown call-ide", "error", False, None),
    (b"k1 d6:result10:load limite", "load limit", False, None),
]


@pytest.mark.parametrize(("datagram", "result", "ok", "sdp"), REPLIES)
def test_parse_reply(datagram: bytes, result: str, ok: bool, sdp: bytes | None) -> None:
    cookie, reply = ng.parse_reply(datagram)
    assert (cookie, reply.result, reply.ok, reply.sdp) == (b"k1", result, ok, sdp)


def test_parse_reply_reason_and_warning() -> None:
    data = b"k d6:result5:error12:error-reason15:Unknown call-id7:warning2:hie"
    _, reply = ng.parse_reply(data)
    assert (reply.error_reason, reply.warning) == ("Unknown call-id", "hi")


BAD_REPLIES = [
    (b"", "no cookie"),
    (b"nocookie", "no cookie"),
    (b" d6:result2:oke", "no cookie"),
    (b"k1 li1ee", "not a dictionary"),
    (b"k1 de", "no result"),
    (b"k1 d6:resulti1ee", "result is not a string"),
    (b"k1 d6:result2:ok3:sdpi1ee", "sdp is not a string"),
    (b"k1 d6:result2:ok12:error-reasonlee", "error-reason is not a string"),
    (b"k1 d6:result2:ok", "truncated"),
]


@pytest.mark.parametrize(("datagram", "reason"), BAD_REPLIES)
def test_bad_replies(datagram: bytes, reason: str) -> None:
    with pytest.raises(BencodeError, match=reason):
        ng.parse_reply(datagram)


@given(st.binary(max_size=40), st.binary(max_size=120))
def test_any_datagram_parses_or_raises_bencode_error(cookie: bytes, payload: bytes) -> None:
    with contextlib.suppress(BencodeError):
        ng.parse_reply(cookie + b" " + payload)


@given(st.dictionaries(st.sampled_from(["result", "sdp", "error-reason", "x"]), st.binary()))
def test_reply_dictionaries_parse_or_raise_bencode_error(fields: dict[str, bytes]) -> None:
    try:
        _, reply = ng.parse_reply(b"k " + encode(dict(fields)))
    except BencodeError:
        assert not fields.get("result")
    else:
        assert reply.sdp == fields.get("sdp")
