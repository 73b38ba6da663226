"""Header order in what the proxy forwards: its Record-Route never splits the Via rows.

RFC 3261 7.3.1 lets header fields of different names come in any order, but many devices read
the Via rows as one block; a Record-Route between our Via and the caller's (as siplb once sent)
breaks them. Our Via goes right above the caller's (``Edit.add_top_value``); Record-Route on top.
"""

from __future__ import annotations

import pytest

from siplb.proxy.actions import Target

from .harness import UAC, make_lab


def header_names(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return [line.split(b":", 1)[0].strip().lower() for line in head]


def via_rows_together(names: list[bytes]) -> bool:
    rows = [i for i, name in enumerate(names) if name in (b"via", b"v")]
    return rows == list(range(rows[0], rows[0] + len(rows)))


# (transport of the caller, destinations' transport, Record-Route entries: 2 on a change)
CASES = [
    pytest.param("udp", "udp", 1, id="same-listener"),
    pytest.param("udp", "tcp", 2, id="listener-change"),
]


@pytest.mark.parametrize(("caller", "callee", "entries"), CASES)
def test_record_route_does_not_split_the_via_rows(caller: str, callee: str, entries: int) -> None:
    lab = make_lab(1, transport=callee, uac=UAC(target=Target(caller, "127.0.0.1", 5061)))
    call = lab.uac.call(to=Target(caller, "127.0.0.1", 5060))
    call.invite()
    lab.net.run(1.0)
    [forwarded] = [
        w for w in lab.net.sent_by_proxy(lab.uas[0].target) if b"INVITE sip" in w.data[:20]
    ]
    names = header_names(forwarded.data)
    assert names.count(b"record-route") == entries
    assert names.count(b"via") == 2
    assert via_rows_together(names), names
    assert names[:entries] == [b"record-route"] * entries  # on top, as the UAS reads it
    assert call.statuses == [100, 180, 200]


def test_a_caller_whose_via_is_not_its_first_line() -> None:
    """Our Via joins the caller's wherever that sits, so the rows stay together."""
    lab = make_lab(1)
    call = lab.uac.call()
    first, rest = call.data.split(b"\r\n", 1)
    via_line = b"Via: " + call.via + b"\r\n"
    call.data = first + b"\r\nSubject: order\r\n" + rest.replace(via_line, b"", 1)
    call.data = call.data.replace(b"Subject: order\r\n", b"Subject: order\r\n" + via_line, 1)
    call.invite()
    lab.net.run(1.0)
    [invite] = lab.uas[0].invites
    names = header_names(invite.to_bytes())
    assert names[:4] == [b"record-route", b"subject", b"via", b"via"]
    assert call.statuses == [100, 180, 200]
