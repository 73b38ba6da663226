"""rtpengine's ng control protocol: the commands we send and the replies we read.

A datagram is ``<cookie> <bencoded dictionary>``, both ways. The engine echoes the cookie in its
reply, so the cookie matches a reply to its request; it also caches each reply by cookie for a
while and answers a repeated cookie from that cache, which makes a retransmission safe but means
a cookie must never be reused for another command (the shell puts a per-run random part in it).

Commands (rtpengine docs, "ng control protocol")::

    ping                                            -> result "pong"
    offer   call-id from-tag [to-tag] via-branch sdp + options   -> result "ok", sdp
    answer  call-id from-tag to-tag via-branch sdp + options      -> result "ok", sdp
    delete  call-id [from-tag] [to-tag] [via-branch]              -> result "ok" (maybe warning)
    query   call-id [from-tag]                                    -> result "ok", call details

A failed command answers ``result: error`` with an ``error-reason``; an overloaded engine may
answer ``result: load limit``. Any reply proves the engine alive; only ``ok``/``pong`` is success.

Options are written once in the config, as Kamailio's ``rtpengine_offer()`` takes them, and
translated here to the dictionary the engine reads: ``replace-origin`` -> ``replace: [origin]``,
``rtcp-mux-demux`` -> ``rtcp-mux: [demux]``, ``SDES-off`` -> ``SDES: [off]``,
``direction=external`` -> ``direction: [external]``, ``ICE=remove`` -> ``ICE: remove`` (any
other ``key=value`` is one string value), and every other word (``trust-address``,
``symmetric``, ``strict-source``...) -> ``flags: [word]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .bencode import BencodeError, Encodable, Value, decode, encode

PING = "ping"
OFFER = "offer"
ANSWER = "answer"
DELETE = "delete"
QUERY = "query"

MAX_COOKIE = 64
_COOKIE = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_COOKIE)  # printable ASCII, no space
# ``prefix-value`` words that rtpengine reads as an entry of a list option
_LIST_PREFIXES = (("replace-", "replace"), ("rtcp-mux-", "rtcp-mux"), ("SDES-", "SDES"))
# ``key=value`` options whose value is an entry of a list (the others are one string)
_LIST_KEYS = frozenset({"direction", "replace", "rtcp-mux", "SDES", "received-from"})


@dataclass(frozen=True, slots=True)
class Command:
    """One ng command: its name and the dictionary it carries (``command`` included)."""

    name: str
    body: dict[str, Encodable]

    def datagram(self, cookie: bytes) -> bytes:
        """What goes on the wire with ``cookie`` (printable ASCII without spaces)."""
        if _COOKIE.fullmatch(cookie) is None:
            raise ValueError(f"bad cookie {cookie!r}")
        return cookie + b" " + encode(self.body)


@dataclass(frozen=True, slots=True)
class Reply:
    """An engine's answer; ``ok`` is true for ``result: ok`` and ``result: pong``."""

    result: str
    error_reason: str = ""
    warning: str = ""
    sdp: bytes | None = None
    body: dict[str, Value] = field(default_factory=dict)  # everything, for ``query``

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "pong")


def ping() -> Command:
    return Command(PING, {"command": PING})


def offer(
    call_id: str,
    from_tag: str,
    sdp: bytes,
    *,
    to_tag: str = "",
    via_branch: str = "",
    options: tuple[str, ...] = (),
    direction: tuple[str, str] = ("", ""),
) -> Command:
    """An SDP offer. ``to_tag`` is set for an offer inside a dialog (a re-INVITE)."""
    body = _call(OFFER, call_id, from_tag, to_tag, via_branch)
    body["sdp"] = sdp
    _add_options(body, options)
    if all(direction):
        body["direction"] = list(direction)
    return Command(OFFER, body)


def answer(
    call_id: str,
    from_tag: str,
    to_tag: str,
    sdp: bytes,
    *,
    via_branch: str = "",
    options: tuple[str, ...] = (),
) -> Command:
    """The SDP answer to an earlier offer of the same call (the offer's ``from_tag``)."""
    body = _call(ANSWER, call_id, from_tag, to_tag, via_branch)
    body["sdp"] = sdp
    _add_options(body, options)
    return Command(ANSWER, body)


def delete(call_id: str, from_tag: str = "", to_tag: str = "", via_branch: str = "") -> Command:
    """End the call (or only the branch ``via_branch`` when given, for a forked call)."""
    return Command(DELETE, _call(DELETE, call_id, from_tag, to_tag, via_branch))


def query(call_id: str, from_tag: str = "") -> Command:
    return Command(QUERY, _call(QUERY, call_id, from_tag, "", ""))


def _call(
    name: str, call_id: str, from_tag: str, to_tag: str, via_branch: str
) -> dict[str, Encodable]:
    if not call_id:
        raise ValueError("a call needs its call-id")
    body: dict[str, Encodable] = {"command": name, "call-id": call_id}
    tags = (("from-tag", from_tag), ("to-tag", to_tag), ("via-branch", via_branch))
    body.update({key: value for key, value in tags if value})
    return body


def _add_options(body: dict[str, Encodable], options: tuple[str, ...]) -> None:
    """Translate config words into ng keys (see the module's docstring)."""
    lists: dict[str, list[Encodable]] = {}
    flags: list[Encodable] = []
    for option in options:
        key, value = _split_option(option)
        if key == "flags":
            flags.append(value)
        elif key in _LIST_KEYS:
            lists.setdefault(key, []).append(value)
        else:
            body[key] = value
    body.update(lists)
    if flags:
        body["flags"] = flags


def _split_option(option: str) -> tuple[str, str]:
    """``(key, value)``; ``("flags", word)`` for a plain word."""
    key, equals, value = option.partition("=")
    if equals:
        return key, value
    for prefix, name in _LIST_PREFIXES:
        if option.startswith(prefix) and len(option) > len(prefix):
            return name, option[len(prefix) :]
    return "flags", option


def check_option(option: str) -> str | None:
    """Why ``option`` cannot be sent (for the config's problems), or None."""
    if not option or not option.isascii() or not option.isprintable() or " " in option:
        return "an option is one word of printable ASCII"
    key, value = _split_option(option)
    if key in {"command", "call-id", "from-tag", "to-tag", "via-branch", "sdp"}:
        return f"{key!r} is set by siplb for each call"
    if not key or not value:
        return "write key=value with both parts"
    return None


def parse_reply(datagram: bytes) -> tuple[bytes, Reply]:
    """``(cookie, reply)`` from what an engine sent; ``BencodeError`` for anything malformed."""
    cookie, space, payload = datagram.partition(b" ")
    if not space or _COOKIE.fullmatch(cookie) is None:
        raise BencodeError("no cookie before the reply")
    body = decode(payload)
    if not isinstance(body, dict):
        raise BencodeError("the reply is not a dictionary")
    result = _text(body, "result")
    if not result:
        raise BencodeError("the reply has no result")
    sdp = body.get("sdp")
    if sdp is not None and not isinstance(sdp, bytes):
        raise BencodeError("the reply's sdp is not a string")
    reply = Reply(
        result=result,
        error_reason=_text(body, "error-reason"),
        warning=_text(body, "warning"),
        sdp=sdp,
        body=body,
    )
    return cookie, reply


def _text(body: dict[str, Value], key: str) -> str:
    value = body.get(key, b"")
    if not isinstance(value, bytes):
        raise BencodeError(f"the reply's {key} is not a string")
    return value.decode("utf-8", "replace")
