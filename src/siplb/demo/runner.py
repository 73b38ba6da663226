"""``siplb demo``: the balancer, three demo PBXs and the caller on loopback, with a script.

The runner starts everything (the balancer with its admin API and dashboard, guarded by a
token made for the run), plays the script (one PBX stops answering, then answers again), takes a
``Frame`` of what the balancer and the PBXs say at every tick, prints it, and on Ctrl-C, SIGTERM
or the end of ``--duration`` hangs up, stops the balancer and judges the run.

The table's counts and the caller's totals describe one moment and the same calls: a call is
"in call" until its BYE leaves (the balancer ends it when the BYE passes), then "hanging up"
until the BYE is answered. The last frame is taken once the caller is done and before the
balancer stops, so each PBX's count at the balancer is the calls the caller gave up on at exit
whose INVITE the balancer still holds (cancelled on a PBX that stopped answering; it waits
64*T1 for their final response, RFC 3261 9.1); every other count is then 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import signal
import sys
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TextIO

from siplb.app import Balancer, DestinationView
from siplb.config import ConfigError, parse_config
from siplb.words import plural

from .call import CallRecord, Outcome
from .caller import DemoCaller
from .pbx import DemoPbx
from .screen import CLEAR, HIDE_CURSOR, SHOW_CURSOR, Frame, Row, Totals, render, totals_lines
from .settings import HOST, PBX_COUNT, PBX_PORT_OFFSET, SET_NAME, DemoSettings

VICTIM: Final = 1  # the PBX of the script: pbx2
TICK: Final = 0.1
EVENTS_SHOWN: Final = 10
HANGUP_GRACE: Final = 5.0  # for BYEs and CANCELs when stopping (a BYE to a dead PBX takes ~1 s)
BALANCER_GRACE: Final = 0.5


@dataclass(frozen=True, slots=True)
class DemoResult:
    exit_code: int
    interrupted: bool
    records: tuple[CallRecord, ...]
    unexplained: tuple[CallRecord, ...]  # failures no outage of the script explains
    states: tuple[tuple[float, str, str], ...]  # (elapsed, pbx name, new state) as observed
    totals: Totals
    last: Frame | None = None  # the last table: the caller done, the balancer not yet stopped


class _EventLog(logging.Handler):
    """The balancer's log lines (state changes, failovers), as events of the demo."""

    def __init__(self, demo: Demo) -> None:
        super().__init__(logging.INFO)
        self.demo = demo

    def emit(self, record: logging.LogRecord) -> None:
        self.demo.event(record.getMessage())


class Demo:
    def __init__(self, settings: DemoSettings, out: TextIO | None = None) -> None:
        self.settings = settings
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.rng = random.Random(settings.seed)
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.events: deque[str] = deque(maxlen=EVENTS_SHOWN)
        self.states: list[tuple[float, str, str]] = []
        self._last_state: dict[str, str] = {}
        self.judged: Counter[str] = Counter()  # "completed", "cancelled", "lost", "failed"
        self.lost: Counter[str] = Counter()  # detail (pbx) -> count
        self.unexplained: list[CallRecord] = []
        self.pbxs = [
            DemoPbx(f"pbx{i + 1}", HOST, settings.port + PBX_PORT_OFFSET + i, rng=self.rng)
            for i in range(PBX_COUNT)
        ]
        self.names = {pbx.uri: pbx.name for pbx in self.pbxs}
        self.balancer: Balancer | None = None
        self.caller: DemoCaller | None = None
        self.token = secrets.token_urlsafe(12)  # the admin API's, for this run only
        self.dashboard = ""  # "URL (admin token ...)" once the admin API listens
        self.last: Frame | None = None  # the caller done, the balancer not yet stopped
        self.stop = asyncio.Event()
        self.interrupted = False
        self.live = True  # events are printed as they come only while the demo runs

    # ---- the whole run -------------------------------------------------------------------
    async def run(self) -> DemoResult:
        problems = self.settings.problems()
        if problems:
            for problem in problems:
                self._print(f"siplb demo: {problem}")
            return self._result(2)
        handler = _EventLog(self)
        logger = logging.getLogger("siplb")
        saved = (logger.level, logger.propagate)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            return await self._run()
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]

    async def _run(self) -> DemoResult:
        try:
            await self._start()
        except (OSError, ConfigError) as exc:
            self._print(
                f"siplb demo: cannot start {exc.strerror if isinstance(exc, OSError) else exc}"
            )
            self._print(
                "siplb demo: try another --port (it uses PORT and PORT+10 to PORT+12) "
                "or --admin-port"
            )
            await self._shutdown()
            return self._result(1)
        self._watch_signals(True)  # on until the end: a second Ctrl-C does not cut the hang-up
        if self.tty and self.settings.table:
            self.out.write(HIDE_CURSOR)
        try:
            await self._play()
            caller = self._caller()
            self._print(
                f"stopping: no new calls; BYE for {caller.in_call} answered, CANCEL for "
                f"{caller.setting_up} in setup; then the balancer stops"
            )
            await self._shutdown()
        finally:
            self._watch_signals(False)
            if self.tty and self.settings.table:
                self.out.write(SHOW_CURSOR)
        return self._finish()

    async def _start(self) -> None:
        config = parse_config(self.settings.config_toml(self.token), "<siplb demo>")
        for pbx in self.pbxs:
            with _naming(f"{pbx.name} on udp {HOST}:{pbx.port}"):
                await pbx.start()
        self.balancer = Balancer(config, admin=True)
        with _naming(f"the balancer on udp {HOST}:{self.settings.port}"):
            await self.balancer.start()
        if self.balancer.admin is not None:
            self.dashboard = f"{self.balancer.admin.url}/  (admin token {self.token})"
            self._print(f"siplb demo: dashboard and admin API on {self.dashboard}")
        settings = self.settings
        self.caller = DemoCaller(
            (HOST, settings.port),
            cps=settings.cps,
            hold=settings.hold,
            rng=self.rng,
            on_record=self._judge,
        )
        self.t0 = self.loop.time()
        await self.caller.start(HOST)
        first, last = self.pbxs[0].port, self.pbxs[-1].port
        self.event(f"demo PBXs on udp {HOST}:{first}-{last}; {settings.cps:g} calls/s")

    async def _play(self) -> None:
        settings = self.settings
        period = 1.0 if self.tty else 2.0
        next_draw = self.loop.time() + (0.0 if settings.table else 5.0)
        while not self.stop.is_set():
            elapsed = self.loop.time() - self.t0
            if settings.duration is not None and elapsed >= settings.duration:
                break
            self._script(elapsed)
            self._observe(elapsed)
            if settings.table and self.loop.time() >= next_draw:
                self._draw()
                next_draw += period
            elif not settings.table and self.loop.time() >= next_draw:
                lines = totals_lines(self._totals())
                self._print(f"{elapsed:6.1f} s  {lines[0].strip()}  {lines[1].strip()}")
                next_draw += 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), TICK)

    async def _shutdown(self) -> None:
        if self.caller is not None:
            await self.caller.stop(HANGUP_GRACE)
        if self.balancer is not None and self.balancer.proxy is not None:
            self._observe(self.loop.time() - self.t0)
            if self.caller is not None:
                self.last = self.frame()
            await self.balancer.stop(BALANCER_GRACE)
        for pbx in self.pbxs:
            pbx.close()
        self.live = False

    # ---- the script ----------------------------------------------------------------------
    def _script(self, elapsed: float) -> None:
        s = self.settings
        victim = self.pbxs[VICTIM]
        in_outage = s.down_at <= elapsed % s.cycle < s.up_at
        now = self.loop.time()
        if in_outage and victim.answering:
            victim.stop_answering(now)
            self.event(f"script: {victim.name} stopped answering, as if it crashed")
        elif not in_outage and not victim.answering:
            victim.start_answering(now)
            self.event(f"script: {victim.name} answers again, as if restarted")

    def _observe(self, elapsed: float) -> None:
        """Note every change of state the balancer shows (for the result and the tests)."""
        for view in self._views():
            name = self.names.get(view.uri, view.uri)
            if self._last_state.get(name) != view.state:
                self._last_state[name] = view.state
                self.states.append((elapsed, name, view.state))

    def narrative(self) -> str:
        s = self.settings
        victim = self.pbxs[VICTIM]
        name = victim.name
        state = next((v.state for v in self._views() if v.uri == victim.uri), "?")
        others = " and ".join(p.name for p in self.pbxs if p is not victim)
        if not victim.answering and state != "down":
            return f"{name} stopped answering: watch it go suspect, then down; calls fail over"
        if not victim.answering:
            return f"{name} is down: new calls go to {others} only; its calls were lost with it"
        if state == "down":
            return f"{name} answers again: watch it come back up after 2 answered probes"
        if victim.outages:
            return f"{name} is back up and takes new calls again"
        return (
            f"all three PBXs answer, calls spread ({s.algorithm}); {name} stops at {s.down_at:g} s"
        )

    # ---- what is shown -------------------------------------------------------------------
    def event(self, text: str) -> None:
        for uri, name in self.names.items():
            text = text.replace(f"destination {uri}", f"destination {name}")
            text = text.replace(f"from {uri}", f"from {name}")
        line = f"{self.loop.time() - self.t0:6.1f} s  {text}"
        self.events.append(line)
        if self.live and not self.settings.table:
            self._print(line)

    def frame(self) -> Frame:
        pbx_by_uri = {pbx.uri: pbx for pbx in self.pbxs}
        rows = []
        for view in self._views():
            pbx = pbx_by_uri.get(view.uri)
            rows.append(
                Row(
                    pbx.name if pbx else "?",
                    view.uri,
                    view.state,
                    view.cause,
                    view.weight,
                    view.active_calls,
                    view.probe_latency_ms,
                    pbx.answering if pbx else True,
                    pbx.active_calls if pbx else 0,
                )
            )
        return Frame(
            self.loop.time() - self.t0,
            f"{HOST}:{self.settings.port}",
            SET_NAME,
            self.settings.algorithm,
            rows,
            self._totals(),
            self.narrative(),
            list(self.events),
            self.dashboard,
        )

    def _draw(self, frame: Frame | None = None) -> None:
        text = render(frame or self.frame(), colour=self.tty)
        if self.tty:
            self.out.write(CLEAR + text)
            self.out.flush()
        else:
            self._print(text)

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # ---- judging the run -----------------------------------------------------------------
    def explained(self, record: CallRecord) -> bool:
        """A failure is the script's doing when the PBX the call reached was stopped during it."""
        pbx = next((p for p in self.pbxs if p.name == record.pbx), None)
        return pbx is not None and pbx.was_down_during(record.started, record.ended)

    def _judge(self, record: CallRecord) -> None:
        """Every call once, when it ends (the outages of its lifetime are known by then)."""
        if record.outcome is Outcome.COMPLETED:
            self.judged["completed"] += 1
        elif record.outcome is Outcome.CANCELLED:
            self.judged["cancelled"] += 1
        elif self.explained(record):
            self.judged["lost"] += 1
            self.lost[f"{record.detail} ({record.pbx})"] += 1
        else:
            self.judged["failed"] += 1
            self.unexplained.append(record)

    def _totals(self) -> Totals:
        caller = self.caller
        stats = self.balancer.proxy.stats if self.balancer and self.balancer.proxy else None
        judged = self.judged
        return Totals(
            placed=caller.placed if caller else 0,
            answered=caller.answered if caller else 0,
            in_call=caller.in_call if caller else 0,
            setting_up=caller.setting_up if caller else 0,
            hanging_up=caller.hanging_up if caller else 0,
            given_up=sum(caller.given_up.values()) if caller else 0,
            completed=judged["completed"],
            cancelled=judged["cancelled"],
            lost=judged["lost"],
            failed=judged["failed"],
            failovers=stats["failovers"] if stats else 0,
            probes_ok=stats["probes_ok"] if stats else 0,
            probes_failed=stats["probes_failed"] if stats else 0,
        )

    def _finish(self) -> DemoResult:
        records = tuple(self._caller().records)
        unexplained = tuple(self.unexplained)
        code = 0 if self.interrupted or not unexplained else 1
        last = self.last or self.frame()
        if self.settings.table:
            self._draw(last)
        self._print(f"summary after {last.elapsed:.1f} s")
        for line in totals_lines(last.totals):
            self._print(line)
        self._print(_held(last))
        victim = self.pbxs[VICTIM]
        times = plural(len(victim.outages), "time")
        self._print(f"  script   {victim.name} stopped answering {times}")
        self._print(f"  states   {victim.name} {_went(self.states, victim.name)}")
        for detail, count in sorted(self.lost.items()):
            self._print(f"  lost     {count} x {detail}")
        for record in unexplained:
            self._print(
                f"  FAILED   {record.call_id} via {record.pbx or 'no pbx'}: {record.detail} "
                f"({record.outcome}, {record.started - self.t0:.1f} s to "
                f"{record.ended - self.t0:.1f} s)"
            )
        if code == 0 and unexplained:
            self._print(f"result: stopped by a signal ({len(unexplained)} unexplained failures)")
        elif code == 0:
            self._print("result: ok (no call failed but those lost with a PBX the script stopped)")
        else:
            failed = plural(len(unexplained), "call")
            self._print(f"result: {failed} failed, not explained by the script")
        return self._result(code, records, unexplained)

    def _result(
        self,
        code: int,
        records: tuple[CallRecord, ...] = (),
        unexplained: tuple[CallRecord, ...] = (),
    ) -> DemoResult:
        return DemoResult(
            code,
            self.interrupted,
            records,
            unexplained,
            tuple(self.states),
            self.last.totals if self.last else self._totals(),
            self.last,
        )

    # ---- plumbing ------------------------------------------------------------------------
    def _views(self) -> list[DestinationView]:
        balancer = self.balancer
        if balancer is None or balancer.proxy is None:
            return []
        return list(balancer.destinations())

    def _caller(self) -> DemoCaller:
        assert self.caller is not None
        return self.caller

    def _on_signal(self) -> None:
        self.interrupted = True
        self.stop.set()

    def _watch_signals(self, on: bool) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if on:
                    self.loop.add_signal_handler(signum, self._on_signal)
                else:
                    self.loop.remove_signal_handler(signum)


def _held(frame: Frame) -> str:
    """The calls the balancer still held when it stopped, per PBX (see the module's text)."""
    held = [f"{row.name} {row.active_calls}" for row in frame.rows if row.active_calls]
    count = sum(row.active_calls for row in frame.rows)
    if not count:
        return "  balancer held no call when it stopped"
    return (
        f"  balancer held {plural(count, 'call')} when it stopped ({', '.join(held)}): "
        f"given up {frame.totals.given_up}, cancelled with no final response, which it awaits "
        "64*T1 (RFC 3261 9.1)"
    )


def _went(states: list[tuple[float, str, str]], name: str) -> str:
    seen = [f"{state} at {at:.1f} s" for at, who, state in states if who == name]
    return ", ".join(seen) if seen else "(not seen)"


@contextlib.contextmanager
def _naming(what: str) -> Iterator[None]:
    """An OSError (a port in use) that says whose port it was."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"{what}: {exc.strerror or exc}") from exc
