"""Active health checks: SIP OPTIONS to every destination (docs/design.md section 4).

Every ``interval`` each destination gets an OPTIONS from this node's listener; a final response
whose code is not in ``dead_codes`` within ``timeout`` is alive, anything else is a failure. The
health table turns results into states with its ``down_after``/``up_after`` thresholds. Each
destination is probed with its set's ``health`` settings (``[[sets]] health``), else ``[health]``.

In a cluster a member probes only the destinations whose health it owns, and follows the
owner's decisions for the others; but a destination still ``probing`` here (just added, the
owner's first decision not heard yet, or an owner whose config does not list it yet) is probed
by this member too, so that it never stays unproven while its owner says nothing.

Round-trip times are differences of the shell's ``now``, which comes from a sub-millisecond
monotonic clock (``siplb.io.driver``).
"""

from __future__ import annotations

from collections import Counter, deque

from siplb.cluster.ownership import Ownership
from siplb.dispatch import DestinationSpec, HealthSettings, State

from .actions import Target
from .context import Context
from .overload import OverloadGuard

LATENCY_SAMPLES = 128


class Prober:
    def __init__(
        self, context: Context, overload: OverloadGuard, health: HealthSettings, now: float
    ) -> None:
        self.context = context
        self.overload = overload
        self.settings = health
        self.deadline: float | None = None
        self.pending: dict[str, tuple[str, float, Target]] = {}  # branch -> (uri, sent, target)
        self.next_at: dict[str, float] = {}
        # a new destination's offset, added once after its first probe, so that the probes of
        # destinations added together do not go out in a burst every interval
        self._phase: dict[str, float] = {}
        self.latency: dict[str, deque[float]] = {}  # the last LATENCY_SAMPLES answers' times
        self.answered: Counter[str] = Counter()  # answers ever timed, per URI (for histograms)
        self._seq = 0
        # in a cluster: probe only the destinations this member owns (None: all of them)
        self.ownership: Ownership | None = None
        self.refresh(now)

    def refresh(self, now: float) -> None:
        """(Re)plan probes for the current destinations: new ones at once (they take calls
        only once a probe is answered), their next probes spread a little."""
        targets = self.context.dispatcher.probe_targets()
        known = {spec.uri for spec in targets}
        for uri in list(self.next_at):
            if uri not in known:
                del self.next_at[uri]
                self._phase.pop(uri, None)
        spread = self.settings.interval / max(1, len(targets))  # [health]'s, for all
        for i, spec in enumerate(targets):
            if spec.uri not in self.next_at:
                self.next_at[spec.uri] = now
                self._phase[spec.uri] = min(i * spread, 0.25)
            self.latency.setdefault(spec.uri, deque(maxlen=LATENCY_SAMPLES))
        self._rearm()

    def _settings(self, uri: str) -> HealthSettings:
        return self.context.dispatcher.health_settings(uri)

    def _leaves_to_owner(self, uri: str) -> bool:
        """Another member probes ``uri``, and this one need not: it is no longer probing."""
        ownership = self.ownership
        if ownership is None or ownership.owns_key(uri.encode()):
            return False
        health = self.context.dispatcher.health
        return uri not in health or health.snapshot(uri).probe_state is not State.PROBING

    def on_timer(self, now: float) -> None:
        excused = self.overload.excuses_timeouts(now)
        for branch, (uri, sent, _target) in list(self.pending.items()):
            if sent + self._settings(uri).timeout <= now:
                del self.pending[branch]
                if excused:  # the answer may be waiting in our own receive queue
                    self.context.stats["probes_excused"] += 1
                else:
                    self._result(uri, False, "probe timeout", now)
        for spec in self.context.dispatcher.probe_targets():
            due = self.next_at.get(spec.uri)
            if due is not None and due <= now:
                # another member may probe it; then look again when this one would have
                phase = self._phase.pop(spec.uri, 0.0)
                self.next_at[spec.uri] = now + self._settings(spec.uri).interval + phase
                if not self._leaves_to_owner(spec.uri):
                    self._send(spec, now)
        self._rearm()

    def receive(self, branch: str, status: int, now: float) -> None:
        entry = self.pending.get(branch)
        if entry is None or status < 200:
            return
        del self.pending[branch]
        uri, sent, _target = entry
        ok = status not in self._settings(uri).dead_codes
        if ok:
            self.latency.setdefault(uri, deque(maxlen=LATENCY_SAMPLES)).append(now - sent)
            self.answered[uri] += 1
        self._result(uri, ok, f"probe answered {status}", now)
        self._rearm()

    def transport_error(self, target: Target, now: float) -> None:
        for branch, (uri, _sent, where) in list(self.pending.items()):
            if where == target:
                del self.pending[branch]
                self._result(uri, False, "probe transport error", now)
        self._rearm()

    def _result(self, uri: str, ok: bool, cause: str, now: float) -> None:
        self.context.stats["probes_ok" if ok else "probes_failed"] += 1
        event = self.context.dispatcher.health.probe_result(uri, ok, now, cause)
        if event is not None:
            self.context.emit(event)

    def _send(self, spec: DestinationSpec, now: float) -> None:
        context = self.context
        target = Target(spec.transport, spec.host, spec.port)
        listener = context.listeners[context.unicast_for(target)]
        branch = context.branches.probe()
        host = f"[{spec.host}]" if ":" in spec.host else spec.host
        ruri = f"sip:{host}:{spec.port}"
        if spec.transport != "udp":
            ruri += f";transport={spec.transport}"
        self._seq += 1
        data = (
            f"OPTIONS {ruri} SIP/2.0\r\n"
            f"Via: {listener.via_prefix.decode()};branch={branch}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:siplb@{listener.sent_by.decode()}>;tag={context.branches.owner}\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: {branch}\r\n"
            f"CSeq: {self._seq} OPTIONS\r\n"
            f"User-Agent: siplb\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode("ascii")
        self.pending[branch] = (spec.uri, now, target)
        context.send(data, target, listener.index)

    def _rearm(self) -> None:
        times = [sent + self._settings(uri).timeout for uri, sent, _t in self.pending.values()]
        times.extend(self.next_at.values())
        self.context.heap.schedule(self, min(times) if times else None)
