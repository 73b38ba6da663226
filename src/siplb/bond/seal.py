"""Sealing: every packet is encrypted and authenticated with ChaCha20-Poly1305 under the key the
client and the server share; the clear header is the associated data, so nothing in it can be
changed either.

The 96-bit nonce is the direction (client to server 0, server to client 1) in four bytes and the
sender's 64-bit packet number. An end never repeats a number under one key: it starts from a
value the shell derives from the wall clock (microseconds since the epoch), so a restarted end
starts above everything it sent before, and counts up from there. The receiver keeps a replay
window over the numbers it has accepted (``SeenWindow``), and records a number only once the tag
has been checked, so a forged packet cannot move the window.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .packet import HEADER, Header, PacketError
from .window import SeenWindow

KEY_SIZE = 32
_NONCE = struct.Struct("!IQ")


class Direction(IntEnum):
    UPSTREAM = 0  # client to server
    DOWNSTREAM = 1  # server to client


class Sealer:
    """Seals what one end sends and opens what it receives, for one client's key."""

    def __init__(self, key: bytes, sending: Direction, first_number: int) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a bond key is {KEY_SIZE} bytes")
        self._aead = ChaCha20Poly1305(key)
        self._sending = sending
        self._receiving = Direction(1 - sending)
        self._next = first_number
        self.replay = SeenWindow()

    def next_number(self) -> int:
        number = self._next
        self._next += 1
        return number

    def seal(self, header: Header, body: bytes) -> bytes:
        clear = header.pack()
        nonce = _NONCE.pack(self._sending, header.number)
        return clear + self._aead.encrypt(nonce, body, clear)

    def open(self, datagram: bytes) -> tuple[Header, bytes]:
        """The header and clear body of an authentic, fresh packet; else ``PacketError``."""
        header = Header.unpack(datagram)
        if not self.replay.check(header.number):
            raise PacketError("replayed")
        clear = datagram[: HEADER.size]
        nonce = _NONCE.pack(self._receiving, header.number)
        try:
            body = self._aead.decrypt(nonce, datagram[HEADER.size :], clear)
        except InvalidTag:
            raise PacketError("bad tag") from None
        self.replay.record(header.number)
        return header, body
