"""The siplb Via branch: the one format and the one parser (docs/design.md section 3 step 5).

``z9hG4bK`` (the RFC 3261 8.1.1.7 magic cookie) + ``-`` + the owner's tag ``node.worker`` +
``-`` + a kind letter and a unique part. The member that sent a request owns its client
transaction, so any member reading a response's top Via knows who must get it.

``response_owner`` reads the top Via of a raw response datagram without parsing the message:
the first ``Via``/``v`` header line, its first via-parm (up to a comma), and the ``branch``
parameter in it. It runs on every datagram a member with peers receives, so it is a regex
search that stops at the first Via (right after the status line in practice).
"""

from __future__ import annotations

import re
from typing import Final

from siplb.cluster.member import Member, parse_tag

COOKIE: Final = "z9hG4bK"
_OURS: Final = COOKIE + "-"

_STATUS_LINE: Final = b"SIP/2.0 "
# the first Via header line (RFC 3261 7.3.3 compact form "v"), its value up to a comma or EOL
_TOP_VIA: Final = re.compile(rb"\n(?:via|v)[ \t]*:([^\r\n,]*)", re.IGNORECASE)
# its branch parameter, when it is a siplb branch: the owner's tag
_BRANCH: Final = re.compile(rb";[ \t]*(?i:branch)[ \t]*=[ \t]*z9hG4bK-([^-;\s]{1,40})-")


def prefix(member: Member) -> str:
    """The start of every branch ``member`` makes: ``z9hG4bK-node.worker-``."""
    return f"{_OURS}{member.tag}-"


def owner_of(branch: str) -> Member | None:
    """The member a siplb branch names, or ``None`` for a foreign or broken branch."""
    if not branch.startswith(_OURS):
        return None
    tag, dash, _ = branch[len(_OURS) :].partition("-")
    return parse_tag(tag) if dash else None


def response_tag(data: bytes) -> bytes | None:
    """The owner's tag (``b"node.worker"``) the top Via branch of response ``data`` carries;
    ``None`` for a request, a foreign branch, or bytes that are not SIP enough."""
    if not data.startswith(_STATUS_LINE):
        return None
    via = _TOP_VIA.search(data)
    if via is None:
        return None
    branch = _BRANCH.search(data, via.start(1), via.end(1))
    return None if branch is None else branch[1]


def response_owner(data: bytes) -> Member | None:
    """The member the top Via branch of response ``data`` names, or ``None`` (``response_tag``)."""
    tag = response_tag(data)
    if tag is None or not tag.isascii():
        return None
    return parse_tag(tag.decode("ascii"))
