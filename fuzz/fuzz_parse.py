"""atheris target for the SIP message layer (not part of the default test run).

The one invariant (docs/design.md section 5): for any bytes, ``parse``, every typed view of what it
returns, ``validate_request`` / ``validate_response``, the proxy's edits and ``StreamFramer``
either succeed or raise ``ParseError``. Anything else is a crash. A message that parses must also
parse again, equal, from its own bytes.

    pip install atheris
    PYTHONPATH=src python fuzz/fuzz_parse.py -max_total_time=60 [corpus_dir]

With no corpus directory it starts from the RFC 4475 vectors and a few built-in messages.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from siplb.sip import (
        ParseError,
        Request,
        Response,
        StreamFramer,
        parse,
        validate_request,
        validate_response,
    )

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [p.read_bytes() for p in sorted((ROOT / "tests" / "vectors" / "rfc4475").glob("*.sip"))]
SEEDS.append(
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport\r\n"
    b"Route: <sip:lb.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: c\r\n'
    b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def views(msg: Request | Response) -> None:
    """Read everything a proxy may read, and make the edits a proxy makes."""
    readers = (
        lambda: msg.top_via().branch,
        lambda: [
            (v.branch, v.sent_by, v.rport, v.ttl, v.received, v.maddr, v.to_bytes())
            for v in msg.vias()
        ],
        lambda: msg.cseq,
        lambda: (msg.max_forwards, msg.content_length, msg.expires),
        lambda: (msg.call_id, msg.from_tag, msg.to_tag, msg.headers),
        lambda: (msg.name_addr(b"from"), msg.name_addr(b"to")),
        lambda: [
            a.parsed_uri()
            for name in (b"contact", b"route", b"record-route", b"path")
            for a in msg.name_addrs(name)
        ],
        lambda: msg.parsed_uri() if isinstance(msg, Request) else None,
        lambda: validate_request(msg) if isinstance(msg, Request) else validate_response(msg),
        lambda: msg.with_header_first(b"Via", b"SIP/2.0/UDP lb;branch=z9hG4bKx").to_bytes(),
        lambda: msg.without_top_value(b"via").to_bytes() if msg.has(b"via") else None,
        lambda: msg.without_top_value(b"route").to_bytes() if msg.has(b"route") else None,
    )
    for read in readers:
        with contextlib.suppress(ParseError):
            read()


def test_one_input(data: bytes) -> None:
    try:
        msg = parse(data)
    except ParseError:
        pass
    else:
        again = parse(msg.to_bytes())
        if again != msg:
            raise AssertionError("a parsed message does not parse back equal")
        views(msg)
    framer = StreamFramer()
    step = 1 + (data[0] % 97 if data else 0)
    try:
        for i in range(0, len(data), step):
            for item in framer.feed(data[i : i + step]):
                if isinstance(item, Request | Response):
                    views(item)
    except ParseError:
        pass


def main() -> None:
    args = sys.argv
    if not any(a.startswith("-timeout=") for a in args):
        args = [*args, "-timeout=5"]  # an input this slow is a finding (a regex backtracking)
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if not corpus:  # seed an in-memory start: atheris reads seeds from a directory
        seed_dir = ROOT / "test-artifacts" / "fuzz-corpus"
        seed_dir.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(SEEDS):
            (seed_dir / f"seed-{i:03d}").write_bytes(seed)
        args = [*args, str(seed_dir)]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
