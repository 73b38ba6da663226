"""``[capture]``: SIP capture to a HEP collector (Homer's heplify-server, sngrep, Kamailio).

[capture]
hep = "udp:192.0.2.50:9060"     # the collector: udp or tcp, an IP address and a port
node_id = 2001                  # the HEP capture agent id
node_name = "edge-1"            # optional
password = "..."                # optional: the collector's auth key
what = ["received", "sent"]     # which messages
methods = ["INVITE", "BYE"]     # optional: only these (by CSeq method)
queue = 10000                   # messages waiting to be sent, at most
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from siplb.settings import CaptureSettings

from .problems import Loc, Problems
from .schema import Methods, Model
from .values import parse_peer_address

_CAPTURE: Loc = ("capture",)
MAX_QUEUE = 1_000_000
MAX_NODE_ID = 2**32 - 1  # HEP3 chunk 12 is four octets


def parse_collector(value: Any) -> tuple[str, str, int]:
    """``udp:ip:port`` or ``tcp:[ipv6]:port`` as (transport, ip, port)."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    transport, colon, address = value.partition(":")
    if not colon or transport not in ("udp", "tcp"):
        raise ValueError(f'must be "udp:ip:port" or "tcp:ip:port" (got {value!r})')
    host, port = parse_peer_address(address)
    return transport, host, port


Direction = Literal["received", "sent"]


def _both() -> list[Direction]:
    return ["received", "sent"]


Collector = Annotated[tuple[str, str, int], PlainValidator(parse_collector)]


class CaptureModel(Model):
    hep: Collector | None = None  # required (build_capture), so a bad one hides no other problem
    node_id: int = Field(0, ge=0, le=MAX_NODE_ID)
    node_name: str | None = Field(None, min_length=1, max_length=255)
    password: str | None = Field(None, min_length=1, max_length=255)
    what: list[Direction] = Field(default_factory=_both)
    methods: Methods | None = None
    queue: int = Field(10000, ge=1, le=MAX_QUEUE)


def build_capture(table: dict[str, Any] | None, problems: Problems) -> CaptureSettings | None:
    """``[capture]``, or None when the file has none (nothing is captured)."""
    if table is None:
        return None
    model, broken = problems.validate_partial(CaptureModel, table, _CAPTURE)
    if model is None:
        return None
    if "what" not in broken and not model.what:
        problems.add((*_CAPTURE, "what"), "an empty list captures nothing: remove [capture]")
    if model.hep is None:
        if "hep" not in broken:
            problems.add((*_CAPTURE, "hep"), 'required: the collector, like "udp:192.0.2.50:9060"')
        return None
    transport, host, port = model.hep
    return CaptureSettings(
        host=host,
        port=port,
        transport="tcp" if transport == "tcp" else "udp",
        node_id=model.node_id,
        node_name=model.node_name,
        password=model.password,
        what=frozenset(model.what),
        methods=model.methods,
        queue=model.queue,
    )
