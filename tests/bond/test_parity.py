"""Parity (siplb/bond/parity.py): any one datagram of a group is rebuilt, with its own length."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.bond.packet import Channel
from siplb.bond.parity import ParityDecoder, make_parity, xor_bytes

CH = Channel(1)
GROUP = [b"first datagram", b"2nd", b"the third and longest one", b""]


@pytest.mark.parametrize("missing", range(len(GROUP)))
@pytest.mark.parametrize("parity_first", [True, False])
def test_any_one_missing_datagram_is_rebuilt(missing: int, parity_first: bool) -> None:
    decoder = ParityDecoder()
    parity = make_parity(CH, 40, GROUP)
    found = []
    if parity_first:
        found.append(decoder.add_parity(parity))
    for i, payload in enumerate(GROUP):
        if i != missing:
            found.append(decoder.add_data(40 + i, payload))
    if not parity_first:
        found.append(decoder.add_parity(parity))
    assert [f for f in found if f is not None] == [(40 + missing, GROUP[missing])]


def test_two_missing_are_not_rebuilt() -> None:
    decoder = ParityDecoder()
    decoder.add_data(0, GROUP[0])
    decoder.add_data(1, GROUP[1])
    assert decoder.add_parity(make_parity(CH, 0, GROUP)) is None


def test_a_complete_group_rebuilds_nothing() -> None:
    decoder = ParityDecoder()
    for i, payload in enumerate(GROUP):
        decoder.add_data(i, payload)
    assert decoder.add_parity(make_parity(CH, 0, GROUP)) is None


def test_xor_pads_the_shorter() -> None:
    assert xor_bytes(b"\x0f", b"\xf0\x01") == b"\xff\x01"


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.data())
def test_rebuilt_is_the_datagram(group: list[bytes], data: st.DataObject) -> None:
    missing = data.draw(st.integers(0, len(group) - 1))
    decoder = ParityDecoder()
    for i, payload in enumerate(group):
        if i != missing:
            decoder.add_data(i, payload)
    assert decoder.add_parity(make_parity(CH, 0, group)) == (missing, group[missing])


def test_a_datagram_rebuilt_before_its_copy_arrives_is_told_apart() -> None:
    decoder = ParityDecoder()
    decoder.add_data(0, GROUP[0])
    decoder.add_data(1, GROUP[1])
    decoder.add_data(2, GROUP[2])
    assert decoder.add_parity(make_parity(CH, 0, GROUP)) == (3, GROUP[3])
    assert decoder.arrived_late(3)
    assert not decoder.arrived_late(3)
    assert not decoder.arrived_late(2)
