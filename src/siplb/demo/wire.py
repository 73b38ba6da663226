"""What the demo PBXs and the demo caller share: a UDP socket, identifiers, an SDP body."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any, Final, cast

from siplb.sip import MAGIC_COOKIE, ParseError, Request, Response, parse

T1: Final = 0.5  # RFC 3261 17.1.1.1
T2: Final = 4.0
TIMER_B: Final = 64 * T1  # INVITE transaction timeout (17.1.1.2); Timer F is the same
TRANSACTION_LINGER: Final = 64 * T1  # how long a finished transaction answers retransmissions

Address = tuple[str, int]
Receiver = Callable[[Request | Response, Address], None]


class SipSocket(asyncio.DatagramProtocol):
    """One UDP socket: parsed messages in, bytes out. Datagrams that do not parse are dropped."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("", 0)
        self.dropped = 0

    @classmethod
    async def bind(cls, host: str, port: int, receiver: Receiver) -> SipSocket:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(receiver), local_addr=(host, port)
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: a cast, not an isinstance check
        self.transport = cast(asyncio.DatagramTransport, transport)
        sockname = self.transport.get_extra_info("sockname")
        self.address = (str(sockname[0]), int(sockname[1]))

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            message = parse(data)
        except ParseError:
            self.dropped += 1
            return
        self._receiver(message, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable and the like: the timers find out what was lost."""

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(5)


def sdp(user: str, host: str, rtp_port: int) -> bytes:
    """An audio offer or answer (RFC 4566); no media is ever sent."""
    return (
        "v=0\r\n"
        f"o={user} 1 1 IN IP4 {host}\r\n"
        "s=siplb demo\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 8\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
    ).encode("ascii")


def branch_of(message: Request | Response) -> str | None:
    try:
        return message.top_via().branch
    except ParseError:
        return None
