"""Bencoding, the body format of rtpengine's ng control protocol.

The grammar (BitTorrent BEP 3, as rtpengine speaks it)::

    value   = integer / string / list / dict
    integer = "i" ["-"] digits "e"      ; no leading zeros, no "-0"
    string  = length ":" bytes          ; length = digits, no leading zeros
    list    = "l" *value "e"
    dict    = "d" *(string value) "e"   ; keys unique

Replies come from the network, so decoding is strict and bounded: the input size, the nesting
depth and every length are checked before anything is allocated, and any malformed input raises
``BencodeError`` and nothing else. Dictionary keys need not be sorted on input (rtpengine emits
them in the order it built them); ``encode`` sorts them, as the format asks of writers.
Strings stay ``bytes`` (an SDP is bytes); dictionary keys are ASCII names and come back as
``str``.
"""

from __future__ import annotations

from typing import TypeAlias

Value: TypeAlias = "int | bytes | list[Value] | dict[str, Value]"
Encodable: TypeAlias = (
    "int | bytes | str | list[Encodable] | tuple[Encodable, ...] | dict[str, Encodable]"
)

MAX_SIZE = 65_536  # a UDP datagram cannot be larger
MAX_DEPTH = 16  # ng messages nest three levels at most
_DIGITS = frozenset(b"0123456789")
_MAX_DIGITS = 19  # fits an int64, the widest integer rtpengine reads or writes


class BencodeError(Exception):
    """The bytes are not a bencoded value within the limits; ``reason`` says where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodeError(Exception):
    """We asked to encode something bencoding cannot carry (a bug, never the peer's fault)."""


def encode(value: Encodable) -> bytes:
    """The bencoding of ``value``: ``str`` goes as UTF-8 (lone surrogates from
    ``surrogateescape`` as the bytes they stand for), dictionary keys sorted."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Encodable, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodeError("nested too deep")
    if isinstance(value, bool):
        raise EncodeError("booleans have no bencoding")
    if isinstance(value, int):
        out += b"i%de" % value
    elif isinstance(value, bytes | str):
        # surrogateescape: a Call-ID or tag decoded that way from odd bytes goes back as them
        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        out += b"%d:" % len(data) + data
    elif isinstance(value, list | tuple):
        out += b"l"
        for item in value:
            _encode(item, out, depth + 1)
        out += b"e"
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise EncodeError("dictionary keys must be strings")
        out += b"d"
        for key in sorted(value, key=str.encode):
            _encode(key, out, depth + 1)
            _encode(value[key], out, depth + 1)
        out += b"e"
    else:
        raise EncodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes, *, max_size: int = MAX_SIZE, max_depth: int = MAX_DEPTH) -> Value:
    """The one value ``data`` holds; trailing bytes are an error."""
    if len(data) > max_size:
        raise BencodeError(f"{len(data)} bytes, over the limit of {max_size}")
    value, end = decode_prefix(data, 0, max_depth=max_depth)
    if end != len(data):
        raise BencodeError(f"trailing bytes at offset {end}")
    return value


def decode_prefix(data: bytes, start: int, *, max_depth: int = MAX_DEPTH) -> tuple[Value, int]:
    """The value that starts at ``start`` and the offset just after it."""
    return _Decoder(data, max_depth).value(start, 0)


class _Decoder:
    """One pass over ``data``; every method takes an offset and returns (value, next offset)."""

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.max_depth = max_depth

    def value(self, at: int, depth: int) -> tuple[Value, int]:
        if at >= len(self.data):
            raise BencodeError(f"truncated at offset {at}")
        lead = self.data[at]
        if lead == ord("i"):
            return self.integer(at + 1, ord("e"))
        if lead in _DIGITS:
            return self.string(at)
        if depth >= self.max_depth:
            raise BencodeError(f"nested deeper than {self.max_depth} at offset {at}")
        if lead == ord("l"):
            return self.list(at + 1, depth + 1)
        if lead == ord("d"):
            return self.dict(at + 1, depth + 1)
        raise BencodeError(f"unexpected byte {lead:#04x} at offset {at}")

    def integer(self, at: int, end_byte: int) -> tuple[int, int]:
        """Digits up to ``end_byte`` ("e" for an integer, ":" for a string's length)."""
        end = self.data.find(end_byte, at, at + _MAX_DIGITS + 2)
        if end < 0:
            raise BencodeError(f"unterminated number at offset {at}")
        text = self.data[at:end]
        digits = text[1:] if text[:1] == b"-" and end_byte == ord("e") else text
        if not digits or not set(digits) <= _DIGITS or len(digits) > _MAX_DIGITS:
            raise BencodeError(f"bad number at offset {at}")
        if (digits[0] == ord("0") and len(digits) > 1) or text == b"-0":
            raise BencodeError(f"non-canonical number at offset {at}")
        return int(text), end + 1

    def string(self, at: int) -> tuple[bytes, int]:
        length, start = self.integer(at, ord(":"))
        end = start + length
        if end > len(self.data):
            raise BencodeError(f"string of {length} bytes at offset {at} runs past the end")
        return self.data[start:end], end

    def list(self, at: int, depth: int) -> tuple[list[Value], int]:
        items: list[Value] = []
        while self.peek(at) != ord("e"):
            item, at = self.value(at, depth)
            items.append(item)
        return items, at + 1

    def dict(self, at: int, depth: int) -> tuple[dict[str, Value], int]:
        result: dict[str, Value] = {}
        while self.peek(at) != ord("e"):
            if self.data[at] not in _DIGITS:
                raise BencodeError(f"dictionary key is not a string at offset {at}")
            raw, at = self.string(at)
            key = _key(raw, at)
            if key in result:
                raise BencodeError(f"duplicate key {key!r} at offset {at}")
            result[key], at = self.value(at, depth)
        return result, at + 1

    def peek(self, at: int) -> int:
        if at >= len(self.data):
            raise BencodeError(f"truncated at offset {at}")
        return self.data[at]


def _key(raw: bytes, at: int) -> str:
    if not raw.isascii():
        raise BencodeError(f"dictionary key is not ASCII before offset {at}")
    return raw.decode("ascii")
