"""One side of the NAT lab's call, run inside a network namespace by ``test_nat_media.py``.

    python -m media_calls.nat_ua caller HOST SIPLB_HOST SIPLB_PORT
    python -m media_calls.nat_ua callee HOST PORT

Each side plays its part of one call (INVITE with SDP, 200 with SDP, ACK, RTP both ways for
``RTP_SECONDS``, BYE) and prints one JSON line: the SDP address and port it was given for the
other side, and the sequence numbers of the other side's RTP that reached it.
"""

from __future__ import annotations

import json
import sys

from siplb.sip import Request, Response

from .ua import Phone, learn_dialog, media_address

RTP_SECONDS = 2.0
CALLER_SSRC, CALLEE_SSRC = 0x1111, 0x2222


def caller(host: str, siplb: tuple[str, int]) -> dict[str, object]:
    phone = Phone("alice", host)
    ruri = f"sip:bob@{siplb[0]}:{siplb[1]}"
    dialog, data = phone.invite(siplb, ruri)
    phone.send(data, siplb)
    ok, _ = phone.expect(200, timeout=10.0, skip=(100, 180))
    assert isinstance(ok, Response)
    learn_dialog(dialog, ok)
    phone.send(phone.in_dialog("ACK", dialog), siplb)
    peer = media_address(ok.body)
    got = phone.exchange_rtp(peer, CALLER_SSRC, CALLEE_SSRC, RTP_SECONDS)
    phone.send(phone.in_dialog("BYE", dialog), siplb)
    phone.expect(200, timeout=5.0)
    return {"sdp": list(peer), "received": sorted(got), "call_id": dialog.call_id}


def callee(host: str, port: int) -> dict[str, object]:
    phone = Phone("bob", host, port=port)
    print(json.dumps({"ready": True}), flush=True)
    invite, at = phone.expect("INVITE", timeout=20.0)
    assert isinstance(invite, Request)
    phone.answer(invite, 180, at)
    phone.answer(invite, 200, at, body=phone.sdp())
    phone.expect("ACK", timeout=5.0)
    peer = media_address(invite.body)
    got = phone.exchange_rtp(peer, CALLEE_SSRC, CALLER_SSRC, RTP_SECONDS)
    bye, at = phone.expect("BYE", timeout=5.0)
    assert isinstance(bye, Request)
    phone.answer(bye, 200, at)
    return {"sdp": list(peer), "received": sorted(got)}


def main(argv: list[str]) -> int:
    role = argv[0]
    if role == "caller":
        result = caller(argv[1], (argv[2], int(argv[3])))
    else:
        result = callee(argv[1], int(argv[2]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
