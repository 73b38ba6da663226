"""What the proxy core asks of a media engine, and nothing more (docs/design.md section 2).

The core never talks to an rtpengine: it parks the message whose SDP must be rewritten and
emits a ``MediaAsk``; the shell (``siplb.io.media``) runs it and reports the engine's SDP back
through ``Proxy.media_done(token, sdp, now)``. A frozen value, so both sides can share it.
"""

from __future__ import annotations

from dataclasses import dataclass

OFFER = "offer"
ANSWER = "answer"
DELETE = "delete"
OPS = (OFFER, ANSWER, DELETE)


@dataclass(frozen=True, slots=True)
class MediaAsk:
    """One engine command; ``token`` names the parked message (0: nothing waits, a delete)."""

    token: int
    op: str
    call_id: str
    from_tag: str
    to_tag: str
    sdp: bytes
    via_branch: str
    flags: tuple[str, ...]
    direction: tuple[str, str]
