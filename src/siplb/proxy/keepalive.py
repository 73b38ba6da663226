"""NAT keepalives for the phones registered through us: a timer wheel, not a timer per phone.

Every binding learned from a 2xx to a REGISTER (its flow, contact, expiry) sits in one of
``SLOTS`` buckets chosen by a hash of its flow. One entry in the core's timer heap walks the
wheel: every ``interval / SLOTS`` seconds it visits the next bucket, so each phone is pinged
once per ``interval`` and 100k phones mean about 100k / SLOTS pings per tick, evenly spread.

UDP phones get an OPTIONS (an answer of any status proves the binding is open); stream phones a
CRLF CRLF ping (RFC 5626 3.5.1) on their own connection, whose loss the shell reports. A phone
that leaves ``misses`` pings in a row unanswered, or whose connection is gone, is reported once
(``PhoneUnreachable``); an answer afterwards reports it back (``PhoneReachable``).

In a cluster one live member keeps each binding open, whichever member learned it. Keepalive
exports what it learns as a diff the shell drains (``changes``: bindings learned or refreshed,
and bindings gone: unregistered, expired, connection lost), at most ``EXPORT_LIMIT`` flows
pending (more are counted in ``keepalive_export_overflow``). It is told which bindings it keeps
for others (``adopt``: one learned elsewhere that this member now owns) and which it no longer
keeps (``release``: another member owns it now; nothing is exported, the binding lives on
there). Only UDP bindings are shared: a stream phone's flow is a connection to the member that
learned it, and no other member can ping it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import islice

from .actions import PhoneReachable, PhoneUnreachable, Target
from .context import Context

SLOTS = 64
CRLF_PING = b"\r\n\r\n"
EXPORT_LIMIT = 50_000  # flows pending export between two drains


@dataclass(slots=True)
class Binding:
    flow: Target
    listener: int
    aor: bytes
    contact: bytes
    expires_at: float
    slot: int
    pending: str | None = None  # branch of the unanswered OPTIONS
    misses: int = 0
    reported: bool = False


@dataclass(frozen=True, slots=True)
class Shared:
    """A binding as members share it; ``expires_at`` on the clock of the ``now`` it is used with."""

    flow: Target
    listener: int
    aor: bytes
    contact: bytes
    expires_at: float


@dataclass(frozen=True, slots=True)
class BindingChanges:
    """Bindings learned or refreshed, and flows whose binding is gone, since the last drain."""

    learned: tuple[Shared, ...] = ()
    gone: tuple[Target, ...] = ()


def flow_key(flow: Target) -> str:
    """The name a flow is shared under: ``transport:host:port``."""
    return f"{flow.transport}:{flow.host}:{flow.port}"


def parse_flow(key: str) -> Target | None:
    """The flow ``flow_key`` named, or ``None`` for a name it cannot have made."""
    transport, _, rest = key.partition(":")
    host, _, port = rest.rpartition(":")
    if transport not in ("udp", "tcp", "tls") or not host or not port.isdigit():
        return None
    return Target(transport, host, int(port), flow=True)


class Keepalive:
    """The registered phones' NAT bindings and the wheel that keeps them open."""

    def __init__(
        self, context: Context, *, interval: float, misses: int, max_bindings: int
    ) -> None:
        self.context = context
        self.interval = interval
        self.misses = misses
        self.max_bindings = max_bindings
        self.tick = interval / SLOTS
        self.bindings: dict[Target, Binding] = {}
        self.wheel: list[set[Target]] = [set() for _ in range(SLOTS)]
        self.by_branch: dict[str, Target] = {}
        self.by_contact: dict[tuple[bytes, bytes], Target] = {}  # (aor, contact) -> its flow
        self.position = 0
        self.deadline: float | None = None
        self._seq = 0
        self._exporting = False  # set by the first drain of changes
        self._export: dict[Target, Shared | None] = {}  # flow -> learned, or None: gone

    # ---- what the registrar front end learns ---------------------------------------------------
    def learned(
        self, flow: Target, listener: int, aor: bytes, contact: bytes, expires: int, now: float
    ) -> None:
        """A 2xx to a REGISTER: the binding for ``flow`` (``expires`` 0 removes it)."""
        if expires <= 0:
            self.forget(flow)
            return
        if self._keep(flow, listener, aor, contact, now + expires, now):
            self._exported(flow, _shared(self.bindings[flow]))

    def adopt(self, shared: Shared, now: float) -> None:
        """Keep open a binding another member learned: this member owns it now."""
        if shared.expires_at > now and not shared.flow.reliable:
            flow, expires_at = shared.flow, shared.expires_at
            self._keep(flow, shared.listener, shared.aor, shared.contact, expires_at, now)

    def release(self, flow: Target) -> None:
        """Stop keeping ``flow`` open: another member owns it now (nothing is exported)."""
        self._drop(flow)

    def forget(self, flow: Target) -> None:
        """The binding is gone (unregistered, expired, its connection lost); exported as gone
        even when another member keeps it open (a phone unregistering through us)."""
        self._drop(flow)
        self._exported(flow, None)

    def changes(self, limit: int) -> BindingChanges:
        """Drain up to ``limit`` exported flows: bindings learned or refreshed, and gone. The
        first drain starts the export with every binding kept."""
        if not self._exporting:
            self._exporting = True
            for binding in self.bindings.values():
                self._exported(binding.flow, _shared(binding))
        flows = list(islice(self._export, limit))
        learned: list[Shared] = []
        gone: list[Target] = []
        for flow in flows:
            shared = self._export.pop(flow)
            if shared is None:
                gone.append(flow)
            else:
                learned.append(shared)
        return BindingChanges(tuple(learned), tuple(gone))

    def _exported(self, flow: Target, shared: Shared | None) -> None:
        if not self._exporting or flow.reliable:
            return
        if flow in self._export or len(self._export) < EXPORT_LIMIT:
            self._export[flow] = shared
        else:
            self.context.stats["keepalive_export_overflow"] += 1

    def _keep(
        self,
        flow: Target,
        listener: int,
        aor: bytes,
        contact: bytes,
        expires_at: float,
        now: float,
    ) -> bool:
        """Add or refresh the binding for ``flow``; False when the table is full."""
        previous = self.by_contact.get((aor, contact))
        if previous is not None and previous != flow:
            self.forget(previous)  # the phone registered again from a new NAT binding
        binding = self.bindings.get(flow)
        if binding is None:
            if len(self.bindings) >= self.max_bindings:
                self.context.stats["keepalive_bindings_refused"] += 1
                return False
            slot = zlib.crc32(str(flow).encode()) % SLOTS
            binding = Binding(flow, listener, aor, contact, expires_at, slot)
            self.bindings[flow] = binding
            self.wheel[slot].add(flow)
        else:
            self.by_contact.pop((binding.aor, binding.contact), None)
            binding.listener, binding.aor, binding.contact = listener, aor, contact
            binding.expires_at = expires_at
        self.by_contact[(aor, contact)] = flow
        if self.deadline is None:
            self.context.heap.schedule(self, now + self.tick)
        return True

    def _drop(self, flow: Target) -> bool:
        binding = self.bindings.pop(flow, None)
        if binding is None:
            return False
        self.wheel[binding.slot].discard(flow)
        if self.by_contact.get((binding.aor, binding.contact)) == flow:
            del self.by_contact[(binding.aor, binding.contact)]
        if binding.pending is not None:
            self.by_branch.pop(binding.pending, None)
        return True

    # ---- inputs from the core --------------------------------------------------------------------
    def on_timer(self, now: float) -> None:
        bucket = self.wheel[self.position]
        self.position = (self.position + 1) % SLOTS
        for flow in list(bucket):
            self._visit(self.bindings[flow], now)
        self.context.heap.schedule(self, now + self.tick if self.bindings else None)

    def owns(self, branch: str) -> bool:
        return branch in self.by_branch

    def answered(self, branch: str, now: float) -> None:
        flow = self.by_branch.pop(branch, None)
        binding = self.bindings.get(flow) if flow is not None else None
        if binding is None or binding.pending != branch:
            return
        binding.pending = None
        binding.misses = 0
        self.context.stats["keepalives_answered"] += 1
        if binding.reported:
            binding.reported = False
            self.context.emit(PhoneReachable(_text(binding.aor), binding.flow))

    def transport_error(self, target: Target, now: float) -> None:
        binding = self.bindings.get(target)
        if binding is not None:
            binding.misses = self.misses
            self._report(binding, "connection lost")
            self.forget(target)  # a stream phone's flow is gone: it must register again

    # ---- the wheel -------------------------------------------------------------------------------
    def _visit(self, binding: Binding, now: float) -> None:
        if binding.expires_at <= now:
            self.context.stats["keepalive_bindings_expired"] += 1
            self.forget(binding.flow)
            return
        if binding.pending is not None:
            self.by_branch.pop(binding.pending, None)
            binding.pending = None
            binding.misses += 1
            if binding.misses >= self.misses:
                self._report(binding, f"{binding.misses} keepalives unanswered")
        self._ping(binding)

    def _report(self, binding: Binding, cause: str) -> None:
        if not binding.reported:
            binding.reported = True
            self.context.stats["phones_unreachable"] += 1
            self.context.emit(PhoneUnreachable(_text(binding.aor), binding.flow, cause))

    def _ping(self, binding: Binding) -> None:
        context = self.context
        context.stats["keepalives_sent"] += 1
        if binding.flow.reliable:
            context.send(CRLF_PING, binding.flow, binding.listener)
            return
        listener = context.listeners[binding.listener]
        branch = context.branches.keepalive()
        self._seq += 1
        contact = binding.contact.decode("latin-1")
        data = (
            f"OPTIONS {contact} SIP/2.0\r\n"
            f"Via: {listener.via_prefix.decode()};branch={branch}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:keepalive@{listener.sent_by.decode()}>;tag={context.branches.owner}\r\n"
            f"To: <{_text(binding.aor)}>\r\n"
            f"Call-ID: {branch}\r\n"
            f"CSeq: {self._seq} OPTIONS\r\n"
            f"User-Agent: siplb\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode("latin-1")
        binding.pending = branch
        self.by_branch[branch] = binding.flow
        context.send(data, binding.flow, binding.listener)


def _shared(binding: Binding) -> Shared:
    return Shared(binding.flow, binding.listener, binding.aor, binding.contact, binding.expires_at)


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")
