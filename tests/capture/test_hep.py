"""HEP version 3 encoding (``siplb.capture.hep``), checked against hand-built packets and a
decoder written here from the HEP3 layout (sipcapture's HEP3 network protocol specification)."""

from __future__ import annotations

import struct

import pytest

from siplb.capture import Agent, Captured, call_id, cseq_method, encode

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def chunks(packet: bytes) -> list[tuple[int, int, bytes]]:
    """(vendor, type, value) of each chunk; fails on any length that does not add up."""
    assert packet[:4] == b"HEP3"
    total = struct.unpack("!H", packet[4:6])[0]
    assert total == len(packet)
    out = []
    at = 6
    while at < total:
        vendor, kind, length = struct.unpack("!HHH", packet[at : at + 6])
        assert length >= 6
        assert at + length <= total
        out.append((vendor, kind, packet[at + 6 : at + length]))
        at += length
    assert at == total
    return out


def by_type(packet: bytes) -> dict[int, bytes]:
    found = chunks(packet)
    assert all(vendor == 0 for vendor, _, _ in found)
    types = [kind for _, kind, _ in found]
    assert len(types) == len(set(types))
    return {kind: value for _, kind, value in found}


def test_an_ipv4_udp_message_byte_for_byte() -> None:
    message = Captured(
        b"OPTIONS sip:x SIP/2.0\r\nCall-ID: c1\r\n\r\n",
        "udp",
        ("192.0.2.1", 5060),
        ("198.51.100.2", 5070),
        1_700_000_000.25,
    )
    payload = message.data
    expected = (
        b"HEP3"
        + struct.pack("!H", 6 + 7 + 7 + 8 + 8 + 10 + 10 + 7 + 10 + 10 + 10 + 6 + len(payload) + 8)
        + bytes.fromhex("0000 0001 0007 02")  # family: AF_INET
        + bytes.fromhex("0000 0002 0007 11")  # protocol: UDP (17)
        + bytes.fromhex("0000 0007 0008 13c4")  # source port 5060
        + bytes.fromhex("0000 0008 0008 13ce")  # destination port 5070
        + bytes.fromhex("0000 0009 000a 6553f100")  # seconds
        + bytes.fromhex("0000 000a 000a 0003d090")  # 250000 microseconds
        + bytes.fromhex("0000 000b 0007 01")  # SIP
        + bytes.fromhex("0000 000c 000a 000007d1")  # capture agent 2001
        + bytes.fromhex("0000 0003 000a c0000201")  # 192.0.2.1
        + bytes.fromhex("0000 0004 000a c6336402")  # 198.51.100.2
        + struct.pack("!HHH", 0, 15, 6 + len(payload))
        + payload
        + bytes.fromhex("0000 0011 0008")
        + b"c1"  # correlation id: the Call-ID
    )
    assert encode(message, Agent(node_id=2001)) == expected


def test_ipv6_tcp_with_password_and_name() -> None:
    message = Captured(INVITE, "tcp", ("2001:db8::1", 5060), ("2001:db8::2", 40000), 12.5)
    packet = encode(message, Agent(7, "edge-1", "s3cret"))
    assert packet is not None
    found = by_type(packet)
    assert found[1] == bytes([10])
    assert found[2] == bytes([6])
    assert found[5] == bytes.fromhex("20010db8000000000000000000000001")
    assert found[6] == bytes.fromhex("20010db8000000000000000000000002")
    assert struct.unpack("!H", found[8])[0] == 40000
    assert struct.unpack("!I", found[9])[0] == 12
    assert struct.unpack("!I", found[10])[0] == 500_000
    assert struct.unpack("!I", found[12])[0] == 7
    assert found[14] == b"s3cret"
    assert found[15] == INVITE
    assert found[17] == b"a84b4c76e66710"
    assert found[19] == b"edge-1"
    assert 3 not in found
    assert 4 not in found


def test_chunk_order_is_the_one_fixed_offset_readers_expect() -> None:
    packet = encode(Captured(INVITE, "udp", ("10.0.0.1", 1), ("10.0.0.2", 2), 0.0), Agent(1))
    assert packet is not None
    order = [kind for _, kind, _ in chunks(packet)]
    assert order == [1, 2, 7, 8, 9, 10, 11, 12, 3, 4, 15, 17]
    with_key = encode(
        Captured(INVITE, "udp", ("10.0.0.1", 1), ("10.0.0.2", 2), 0.0), Agent(1, "n", "pw")
    )
    assert with_key is not None
    assert [kind for _, kind, _ in chunks(with_key)] == [
        1,
        2,
        7,
        8,
        9,
        10,
        11,
        12,
        3,
        4,
        14,
        15,
        17,
        19,
    ]


def test_tls_is_sent_as_tcp() -> None:
    packet = encode(Captured(INVITE, "tls", ("10.0.0.1", 1), ("10.0.0.2", 5061), 0.0), Agent())
    assert packet is not None
    assert by_type(packet)[2] == bytes([6])


def test_mixed_families_are_written_ipv4_mapped() -> None:
    message = Captured(INVITE, "udp", ("192.0.2.1", 5060), ("2001:db8::2", 5060), 0.0)
    packet = encode(message, Agent())
    assert packet is not None
    found = by_type(packet)
    assert found[1] == bytes([10])
    assert found[5] == bytes.fromhex("00000000000000000000ffffc0000201")


def test_a_message_too_large_for_one_packet_is_not_encoded() -> None:
    agent = Agent(1)
    small = Captured(b"x" * 100, "tcp", ("10.0.0.1", 1), ("10.0.0.2", 2), 0.0)
    overhead = len(encode(small, agent) or b"") - 100
    fits = Captured(b"x" * (65535 - overhead), "tcp", ("10.0.0.1", 1), ("10.0.0.2", 2), 0.0)
    assert len(encode(fits, agent) or b"") == 65535
    too_big = Captured(b"x" * (65536 - overhead), "tcp", ("10.0.0.1", 1), ("10.0.0.2", 2), 0.0)
    assert encode(too_big, agent) is None
    for size in (65535 - 12, 65535 - 11, 65535, 70000):  # the payload chunk alone overflows
        huge = Captured(b"x" * size, "tcp", ("10.0.0.1", 1), ("10.0.0.2", 2), 0.0)
        assert encode(huge, agent) is None


def test_microseconds_stay_within_the_second() -> None:
    packet = encode(Captured(INVITE, "udp", ("10.0.0.1", 1), ("10.0.0.2", 2), 5.9999999), Agent())
    assert packet is not None
    found = by_type(packet)
    assert struct.unpack("!I", found[9])[0] == 5
    assert struct.unpack("!I", found[10])[0] == 999_999


CALL_ID_CASES = [
    (INVITE, b"a84b4c76e66710"),
    (b"SIP/2.0 200 OK\r\ni:  compact@host \r\n\r\n", b"compact@host"),
    (b"BYE sip:x SIP/2.0\r\nCALL-ID:upper\r\n\r\nCall-ID: in-body\r\n", b"upper"),
    (b"BYE sip:x SIP/2.0\r\nVia: x\r\n\r\n", None),
    (b"\xff\xfe garbage", None),
    (b"", None),
    (b"BYE sip:x SIP/2.0\r\nCall-ID:\r\n\r\n", None),
]


@pytest.mark.parametrize(("data", "expected"), CALL_ID_CASES)
def test_call_id(data: bytes, expected: bytes | None) -> None:
    assert call_id(data) == expected


def test_no_correlation_chunk_without_a_call_id() -> None:
    packet = encode(Captured(b"garbage", "udp", ("10.0.0.1", 1), ("10.0.0.2", 2), 0.0), Agent())
    assert packet is not None
    assert 17 not in by_type(packet)


CSEQ_CASES = [
    (INVITE, "INVITE"),
    (b"SIP/2.0 200 OK\r\nCSeq:  2   BYE\r\n\r\n", "BYE"),
    (b"SIP/2.0 200 OK\r\ncseq: 2\r\n\r\n", None),
    (b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", None),
    (b"SIP/2.0 200 OK\r\nCSeq: 1 \xff\r\n\r\n", "\ufffd"),
]


@pytest.mark.parametrize(("data", "expected"), CSEQ_CASES)
def test_cseq_method(data: bytes, expected: str | None) -> None:
    assert cseq_method(data) == expected
