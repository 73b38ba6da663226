"""Sealed node-to-node (and worker-to-worker) messages.

Frame, network byte order::

    version (1) | kind (1) | boot (8) | seq (8) | stamp (8, float seconds) | tag length (1)
    | sender tag ("node.worker") | payload | HMAC-SHA256(secret, everything before), first 16

The sender numbers its frames 1, 2, 3 ... within one boot (``boot`` grows from one start of a
member to the next, e.g. its start time in ms). The receiver (``Opener``) checks, in order:
- MALFORMED: too short, or an unknown version;
- FORGED: the MAC does not match (``hmac.compare_digest``); nothing else in the frame is
  trusted before this (an authentic frame whose sender is not ``node.worker``: MALFORMED);
- STALE: the stamp is more than ``max_skew`` seconds from the receiver's wall clock (so a
  capture replayed later is refused even when its window is gone), or the frame is from an
  older boot of its sender than one already heard;
- REPLAYED: the sequence number was seen, or is ``window`` or more behind the highest seen
  (RFC 4303 3.4.3: a sliding window, so frames reordered within it are accepted).
The table of senders is bounded (``max_senders``, least recently heard dropped first), so frames
from many senders cost memory only while they are recent.
"""

from __future__ import annotations

import hmac
import struct
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Final

from siplb.cluster.member import Member, parse_tag

VERSION: Final = 1
TAG_SIZE: Final = 16
MIN_SECRET: Final = 32
_HEADER: Final = struct.Struct("!BBQQdB")  # version, kind, boot, seq, stamp, tag length


class RejectReason(Enum):
    FORGED = "forged"
    REPLAYED = "replayed"
    STALE = "stale"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Opened:
    sender: Member
    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason


def _mac(secret: bytes, data: bytes) -> bytes:
    return hmac.digest(secret, data, "sha256")[:TAG_SIZE]


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET:
        raise ValueError(f"a channel secret has at least {MIN_SECRET} bytes")


class Sealer:
    """Seals the frames member ``me`` sends during boot ``boot``."""

    def __init__(self, secret: bytes, me: Member, boot: int) -> None:
        _check_secret(secret)
        tag = me.tag.encode("ascii")
        if len(tag) > 255:
            raise ValueError("a member tag has at most 255 bytes")
        self._secret = secret
        self._me = me
        self._tag = tag
        self._boot = boot
        self._seq = 0

    def seal(self, kind: int, payload: bytes, now_wall: float) -> bytes:
        self._seq += 1
        header = _HEADER.pack(VERSION, kind, self._boot, self._seq, now_wall, len(self._tag))
        body = header + self._tag + payload
        return body + _mac(self._secret, body)


class _Window:
    """RFC 4303 3.4.3 anti-replay window of one (sender, boot)."""

    __slots__ = ("highest", "seen", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.highest = 0
        self.seen = 0  # bit i: highest - i was seen

    def accept(self, seq: int) -> bool:
        if seq > self.highest:
            shift = seq - self.highest
            kept = (self.seen << shift) & ((1 << self.size) - 1) if shift < self.size else 0
            self.seen = kept | 1
            self.highest = seq
            return True
        behind = self.highest - seq
        if seq == 0 or behind >= self.size or self.seen >> behind & 1:
            return False
        self.seen |= 1 << behind
        return True


class Opener:
    """Opens the frames sealed with ``secret`` (see the module's checks)."""

    def __init__(
        self, secret: bytes, window: int = 64, max_skew: float = 5.0, max_senders: int = 1024
    ) -> None:
        _check_secret(secret)
        self._secret = secret
        self._window = window
        self._max_skew = max_skew
        self._max_senders = max_senders
        self._senders: OrderedDict[Member, tuple[int, _Window]] = OrderedDict()

    @property
    def senders(self) -> int:
        """How many (sender, boot) replay windows are kept."""
        return len(self._senders)

    def open(self, frame: bytes, now_wall: float) -> Opened | Rejected:
        if len(frame) < _HEADER.size + TAG_SIZE:
            return Rejected(RejectReason.MALFORMED)
        version, kind, boot, seq, stamp, tag_length = _HEADER.unpack_from(frame)
        start = _HEADER.size + tag_length
        end = len(frame) - TAG_SIZE
        if version != VERSION or start > end:
            return Rejected(RejectReason.MALFORMED)
        if not hmac.compare_digest(frame[end:], _mac(self._secret, frame[:end])):
            return Rejected(RejectReason.FORGED)
        raw_tag = frame[_HEADER.size : start]
        sender = parse_tag(raw_tag.decode("ascii")) if raw_tag.isascii() else None
        if sender is None:
            return Rejected(RejectReason.MALFORMED)
        if not abs(now_wall - stamp) <= self._max_skew:  # NaN is stale too
            return Rejected(RejectReason.STALE)
        return self._check_replay(sender, boot, seq) or Opened(sender, kind, frame[start:end])

    def _check_replay(self, sender: Member, boot: int, seq: int) -> Rejected | None:
        known = self._senders.get(sender)
        if known is None or boot > known[0]:
            known = (boot, _Window(self._window))
        elif boot < known[0]:
            return Rejected(RejectReason.STALE)
        if not known[1].accept(seq):
            return Rejected(RejectReason.REPLAYED)
        self._senders[sender] = known
        self._senders.move_to_end(sender)
        while len(self._senders) > self._max_senders:
            self._senders.popitem(last=False)
        return None
