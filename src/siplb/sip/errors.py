"""The two kinds of error in the SIP layer (STYLE.md: the peer misbehaved / we misused the API)."""

from __future__ import annotations


class ParseError(Exception):
    """The peer sent something we will not treat as SIP.

    ``status_hint`` is the response code to answer with when a reply is possible (400 by default,
    505 for a version we do not speak, 513 for a message too large, 416 for a URI scheme we do not
    support).
    """

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status_hint={self.status_hint})"


class MessageTooLarge(ParseError):
    """Message, header count or line length over the configured limits (RFC 3261 21.5.14)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 513)


class LocalProtocolError(Exception):
    """Our own misuse of the SIP layer: a bug, never the peer's fault."""
