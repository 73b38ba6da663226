"""The engine table: which rtpengines are alive, which one a call is on, and how they fare.

Rules, in one place:

- An engine starts ``unknown``. Any reply (even ``result: error``) makes it ``up``: it is alive.
  A command or ping that gets no reply within the timeout (retransmissions included) makes it
  ``down`` at once: a lost offer costs a call's setup a whole timeout, so one is enough.
- A new call's engines are tried in weighted rendezvous order of its Call-ID over the engines
  that are ``up`` or ``unknown`` (``siplb.dispatch.algorithms.rendezvous_score``): every node and
  worker ranks the same Call-ID the same way, a dead engine's calls spread over the others and
  the others keep theirs. A ``down`` engine joins the end of the order once ``retry_after`` has
  passed since it went down (a ping that is answered brings it back sooner).
- The call-id -> engine table has a bound; the entry least recently used is forgotten first
  (counted). An answer or delete for a call the table does not know goes where an offer would.
- State changes are returned as values (``StateChanged``), not logged.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from siplb.dispatch.algorithms import Member, rendezvous_score

from .ng import DELETE, OFFER
from .settings import EngineSpec

LATENCY_SAMPLES = 256  # recent offers whose latency the readings summarise
# upper bounds (seconds) of the offer latency histogram (``siplb_media_offer_seconds``)
OFFER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class EngineState(StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class StateChanged:
    address: str
    old: EngineState
    new: EngineState
    reason: str


@dataclass(frozen=True, slots=True)
class EngineReading:
    """One engine as operators see it (API, ``siplb status``, metrics, dashboard)."""

    address: str
    state: EngineState
    weight: int
    calls: int
    offers: int  # offers answered ok
    offer_p50_ms: float | None  # over the last LATENCY_SAMPLES ok offers
    offer_max_ms: float | None
    failures: tuple[tuple[str, int], ...]  # (op, count), op "offer", "answer", "delete", "ping"
    since: float  # when the state last changed (the caller's clock)
    offer_buckets: tuple[int, ...]  # ok offers at most each of OFFER_BUCKETS, cumulative
    offer_seconds: float  # their latencies' sum


@dataclass(frozen=True, slots=True)
class MediaView:
    """The media side as operators see it: engines, calls, and the client's drops."""

    engines: tuple[EngineReading, ...]
    calls: int  # calls whose engine is remembered
    forgotten: int  # entries dropped to keep the table's bound
    pending: int  # commands waiting for a reply now
    counters: tuple[tuple[str, int], ...]  # the client's (name, count): drops, timeouts...


class _Engine:
    """Mutable record of one engine."""

    __slots__ = (
        "buckets",
        "failures",
        "latencies",
        "member",
        "offer_seconds",
        "offers",
        "retry_at",
        "since",
        "spec",
        "state",
    )

    def __init__(self, spec: EngineSpec, index: int, now: float) -> None:
        self.spec = spec
        self.member = Member(index, spec.address, spec.weight)
        self.state = EngineState.UNKNOWN
        self.since = now
        self.retry_at = 0.0
        self.offers = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.failures: Counter[str] = Counter()
        self.buckets = [0] * len(OFFER_BUCKETS)
        self.offer_seconds = 0.0

    def record_offer(self, latency: float) -> None:
        self.offers += 1
        self.latencies.append(latency)
        self.offer_seconds += latency
        index = bisect.bisect_left(OFFER_BUCKETS, latency)
        if index < len(self.buckets):
            self.buckets[index] += 1


class EngineTable:
    """The engines of ``[media]`` and the calls on them."""

    def __init__(
        self, specs: Sequence[EngineSpec], *, retry_after: float, max_calls: int, now: float
    ) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.retry_after = retry_after
        self.max_calls = max_calls
        self._engines: dict[str, _Engine] = {}
        self._calls: dict[str, str] = {}  # call-id -> address, least recently used first
        self._counts: Counter[str] = Counter()  # address -> calls
        self.forgotten = 0  # entries dropped to keep the bound
        self.update(specs, now)

    # ---- configuration ----------------------------------------------------------------------
    def update(self, specs: Sequence[EngineSpec], now: float) -> tuple[str, ...]:
        """Take a new engine list (a reload): kept engines keep their state, new ones start
        ``unknown``; calls on removed engines are forgotten. Returns the removed addresses."""
        old = self._engines
        self._engines = {}
        for index, spec in enumerate(specs):
            engine = old.get(spec.address)
            if engine is None:
                engine = _Engine(spec, index, now)
            else:  # the weight may have changed
                engine.spec, engine.member = spec, Member(index, spec.address, spec.weight)
            self._engines[spec.address] = engine
        removed = tuple(address for address in old if address not in self._engines)
        for call_id in [c for c, a in self._calls.items() if a not in self._engines]:
            self.forget(call_id)
        return removed

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(self._engines)

    def spec(self, address: str) -> EngineSpec:
        return self._engines[address].spec

    def state(self, address: str) -> EngineState:
        return self._engines[address].state

    # ---- choosing ---------------------------------------------------------------------------
    def order(self, call_id: str, now: float) -> list[str]:
        """Engines to try, best first, for a new call: live ones by rendezvous score, then the
        down ones whose retry time has come."""
        key = call_id.encode("utf-8", "surrogateescape")
        ranked = sorted(
            self._engines.values(),
            key=lambda engine: rendezvous_score(engine.member, key),
            reverse=True,
        )
        live = [e.spec.address for e in ranked if e.state is not EngineState.DOWN]
        due = [e.spec.address for e in ranked if e.state is EngineState.DOWN and e.retry_at <= now]
        return live + due

    def targets(self, op: str, call_id: str, now: float, *, shared: bool = False) -> list[str]:
        """Engines to try for ``op`` on ``call_id``, in order.

        An offer goes to the call's engine first (a re-INVITE), else or then in ``order``. An
        answer or delete goes to the call's engine only, unless the engines share their calls
        (``shared``): then the others follow. For a call we do not know, an answer tries
        ``order`` (the engines say which has it) and a delete goes to the first of it.
        """
        known = self._calls.get(call_id)
        ranked = self.order(call_id, now)
        if known is None:
            return ranked[:1] if op == DELETE else ranked
        rest = [address for address in ranked if address != known]
        if op == OFFER:
            return [known, *rest] if known in ranked else rest
        return [known, *rest] if shared else [known]

    # ---- results ----------------------------------------------------------------------------
    def succeeded(
        self, address: str, op: str, now: float, latency: float | None = None
    ) -> StateChanged | None:
        """An ``ok`` reply to ``op``; ``latency`` (seconds) is recorded for offers."""
        engine = self._engines.get(address)
        if engine is None:
            return None
        if op == OFFER and latency is not None:
            engine.record_offer(latency)
        return self._set(engine, EngineState.UP, now, f"{op} answered")

    def refused(
        self, address: str, op: str, now: float, reason: str, *, fault: bool = True
    ) -> StateChanged | None:
        """An error reply: the engine is alive but did not do it, counted as a failure unless
        it was no ``fault`` (asked about a call it was never given)."""
        engine = self._engines.get(address)
        if engine is None:
            return None
        if fault:
            engine.failures[op] += 1
        return self._set(engine, EngineState.UP, now, f"{op} refused: {reason}")

    def timed_out(self, address: str, op: str, now: float) -> StateChanged | None:
        """No reply within the timeout: the engine is down until a reply or ``retry_after``."""
        engine = self._engines.get(address)
        if engine is None:
            return None
        engine.failures[op] += 1
        engine.retry_at = now + self.retry_after
        return self._set(engine, EngineState.DOWN, now, f"{op} got no reply")

    def _set(
        self, engine: _Engine, state: EngineState, now: float, reason: str
    ) -> StateChanged | None:
        if engine.state is state:
            return None
        change = StateChanged(engine.spec.address, engine.state, state, reason)
        engine.state, engine.since = state, now
        return change

    # ---- calls ------------------------------------------------------------------------------
    def bind(self, call_id: str, address: str) -> None:
        """``call_id`` is on ``address`` now (most recently used)."""
        if address not in self._engines:
            return
        self.forget(call_id)
        if len(self._calls) >= self.max_calls:
            self.forget(next(iter(self._calls)))
            self.forgotten += 1
        self._calls[call_id] = address
        self._counts[address] += 1

    def touch(self, call_id: str) -> None:
        """The call was used: it becomes the most recently used."""
        address = self._calls.pop(call_id, None)
        if address is not None:
            self._calls[call_id] = address

    def forget(self, call_id: str) -> None:
        address = self._calls.pop(call_id, None)
        if address is not None:
            self._counts[address] -= 1
            if not self._counts[address]:
                del self._counts[address]

    def engine_of(self, call_id: str) -> str | None:
        return self._calls.get(call_id)

    @property
    def calls(self) -> int:
        return len(self._calls)

    # ---- readings ---------------------------------------------------------------------------
    def readings(self) -> tuple[EngineReading, ...]:
        return tuple(self._reading(engine) for engine in self._engines.values())

    def _reading(self, engine: _Engine) -> EngineReading:
        samples = sorted(engine.latencies)
        p50 = samples[(len(samples) - 1) // 2] * 1000 if samples else None
        return EngineReading(
            address=engine.spec.address,
            state=engine.state,
            weight=engine.spec.weight,
            calls=self._counts[engine.spec.address],
            offers=engine.offers,
            offer_p50_ms=p50,
            offer_max_ms=samples[-1] * 1000 if samples else None,
            failures=tuple(sorted(engine.failures.items())),
            since=engine.since,
            offer_buckets=tuple(itertools.accumulate(engine.buckets)),
            offer_seconds=engine.offer_seconds,
        )
