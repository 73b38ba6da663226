"""Answering a message that does not parse (docs/design.md section 3, step 1).

A request that fails parsing gets the parser's status hint back when a reply can be built: its
Via, From, To, Call-ID and CSeq lines are found leniently and echoed, with a Warning naming the
fault. A response, an ACK, or anything without those lines is dropped (and counted by the caller).
"""

from __future__ import annotations

import re
from typing import Final

from .build import REASONS

_WANTED: Final = {
    b"via": b"Via",
    b"v": b"Via",
    b"from": b"From",
    b"f": b"From",
    b"to": b"To",
    b"t": b"To",
    b"call-id": b"Call-ID",
    b"i": b"Call-ID",
    b"cseq": b"CSeq",
}
_METHOD_RE: Final = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+ ")
_UNSAFE_RE: Final = re.compile(rb'[^\x20-\x7e]|"|\\')


def reply_to_garbage(data: bytes, status: int, reason: str) -> bytes | None:
    head = data.lstrip(b"\r\n")
    m = _METHOD_RE.match(head)
    if m is None or head.startswith((b"SIP/", b"ACK ")):
        return None
    found: dict[bytes, list[bytes]] = {}
    for line in head.split(b"\n")[1:256]:
        line = line.rstrip(b"\r")
        if not line:
            break
        name, colon, value = line.partition(b":")
        canon = _WANTED.get(name.strip(b" \t").lower())
        if colon and canon is not None:
            found.setdefault(canon, []).append(value.strip(b" \t"))
    if any(name not in found for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")):
        return None
    lines = [b"SIP/2.0 %d %s" % (status, REASONS.get(status, b"Bad Request"))]
    for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq"):
        values = found[name] if name == b"Via" else found[name][:1]
        for value in values:
            if name == b"To" and b"tag=" not in value.lower():
                value += b";tag=bad"
            lines.append(name + b": " + value)
    warning = _UNSAFE_RE.sub(b"?", reason.encode("utf-8", "replace"))[:200]
    lines.append(b'Warning: 399 siplb "' + warning + b'"')
    lines.append(b"Server: siplb")
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"
