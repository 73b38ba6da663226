"""Sealing (siplb/bond/seal.py): what one end seals only the other end opens, once; a changed
byte, a wrong key, a packet sent back to its sender, or a replay is refused."""

from __future__ import annotations

import pytest

from siplb.bond.packet import Header, Kind, PacketError
from siplb.bond.seal import Direction, Sealer

KEY = bytes(range(32))


def pair(key: bytes = KEY) -> tuple[Sealer, Sealer]:
    return Sealer(KEY, Direction.UPSTREAM, 100), Sealer(key, Direction.DOWNSTREAM, 500)


def sealed(sender: Sealer, body: bytes = b"hello") -> bytes:
    return sender.seal(Header(Kind.DATA, 1, 7, sender.next_number()), body)


def test_the_other_end_opens_it() -> None:
    client, server = pair()
    header, body = server.open(sealed(client))
    assert (header.kind, header.link, header.client, header.number, body) == (
        Kind.DATA,
        1,
        7,
        100,
        b"hello",
    )


def test_numbers_count_up_from_the_first() -> None:
    client, _ = pair()
    assert [client.next_number() for _ in range(3)] == [100, 101, 102]


@pytest.mark.parametrize("offset", [0, 2, 8, 15, 16, 20, -1])
def test_a_changed_byte_is_refused(offset: int) -> None:
    client, server = pair()
    data = bytearray(sealed(client))
    data[offset] ^= 0x01
    with pytest.raises(PacketError):
        server.open(bytes(data))


def test_a_replay_is_refused() -> None:
    client, server = pair()
    data = sealed(client)
    server.open(data)
    with pytest.raises(PacketError, match="replayed"):
        server.open(data)


def test_a_forgery_does_not_move_the_window() -> None:
    client, server = pair()
    forged = bytearray(sealed(client))
    forged[-1] ^= 1
    with pytest.raises(PacketError, match="bad tag"):
        server.open(bytes(forged))
    server.open(sealed(client))  # the genuine packet with the same number is still fresh


def test_another_key_is_refused() -> None:
    client, server = pair(key=bytes(32))
    with pytest.raises(PacketError, match="bad tag"):
        server.open(sealed(client))


def test_a_packet_reflected_to_its_sender_is_refused() -> None:
    client, _ = pair()
    other_client = Sealer(KEY, Direction.UPSTREAM, 1)
    with pytest.raises(PacketError, match="bad tag"):
        other_client.open(sealed(client))


def test_a_key_has_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(b"short", Direction.UPSTREAM, 0)
