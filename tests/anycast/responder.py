"""A SIP destination for the labs: answers every request it receives with ``200 OK``
(what an OPTIONS probe needs), until it is stopped.

    python responder.py HOST PORT
"""

from __future__ import annotations

import socket
import sys


def answer(request: bytes) -> bytes:
    """``200 OK`` with the request's Via, From, To, Call-ID and CSeq (RFC 3261 8.2.6.2)."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    copied = [
        line
        for line in head[1:]
        if line.split(b":", 1)[0].strip().lower()
        in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")
    ]
    return b"\r\n".join([b"SIP/2.0 200 OK", *copied, b"Content-Length: 0", b"", b""])


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        print("ready", flush=True)
        while True:
            data, source = sock.recvfrom(65535)
            if data[:4] != b"SIP/":
                sock.sendto(answer(data), source)


if __name__ == "__main__":
    main()
