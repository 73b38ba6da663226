"""One benchmark run: two SIPp callees, the balancer under test, one SIPp caller, on loopback.

    with Lab(workdir) as lab:                    # every process started here is stopped in
        uases = lab.callees(2, hold_s=...)       # __exit__ (by PID), also on Ctrl-C
        subject = lab.balancer("siplb", [u.sip_uri for u in uases])
        usage = Meter(subject.pid)               # CPU and memory of its process tree
        uac = lab.caller(subject.address, calls=..., rate=..., hold_ms=...)

The processes come from the end-to-end harness (``tests/e2e``): SIPp with the Record-Route-aware
scenarios, ``siplb run`` with the harness's config, Kamailio with the anchor's configuration:
``bench/kamailio/lean.cfg`` (the same job as siplb and no more: UDP only, warning-level logs, no
sanity module) or, with ``use_anchor("reference")``, the end-to-end tests' heavier
``bench/kamailio/dispatcher.cfg`` (also TCP, info-level logs, a per-message log prefix, sanity).

The balancer's CPU time is user + system time of its whole process tree (Kamailio forks its
workers) read from ``/proc/PID/stat``, including children that already exited; its memory is the
proportional set size (PSS, ``/proc/PID/smaps_rollup``) summed over the tree, so that Kamailio's
shared memory counts once and not once per worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from e2e import balancer as siplb_harness
from e2e import kamailio as kamailio_harness
from e2e import sipp
from e2e.harness import Address

CLK_TCK = os.sysconf("SC_CLK_TCK")
# the end-to-end caller, tolerant of a 180 that comes after the 200 (see its header)
CALLER_TEMPLATE = Path(__file__).resolve().parent / "scenarios" / "uac.xml"
SUBJECTS = ("siplb", "kamailio")  # the subject under test and its anchor (see ``Anchor``)
ANCHOR_SIPLB_EXTRA = "[proxy]\ngrace_period = 1.0\n"  # siplb as the anchor: a short drain
CALLEE_COUNT = 2
KAMAILIO_SHM_MB = 1024  # shared memory for 20,000 held calls' transactions, with room
KAMAILIO_PKG_MB = 16


@dataclass(frozen=True, slots=True)
class Anchor:
    """What siplb is compared with: a Kamailio configuration, or (``config`` None) siplb itself
    as one process with the harness's config alone (the runs' ``--siplb-proxy`` settings, such
    as ``workers=2``, go to the subject under test only)."""

    name: str
    label: str  # the anchor's column in the tables
    config: Path | None
    tcp: bool = False  # also listen on TCP (the runs themselves are UDP)


ANCHORS = {
    "lean": Anchor("lean", "Kamailio", kamailio_harness.LEAN_CFG),
    "reference": Anchor(
        "reference", "Kamailio (reference cfg)", kamailio_harness.DISPATCHER_CFG, tcp=True
    ),
    "one-process": Anchor("one-process", "siplb, 1 process", None),
}
_anchor = ANCHORS["lean"]


def use_anchor(name: str) -> Anchor:
    """Make ``name`` (a key of ``ANCHORS``) what the anchor subject (``"kamailio"``) runs."""
    global _anchor
    _anchor = ANCHORS[name]
    return _anchor


# --- the balancer's process tree -----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of the tree, children that exited (and were reaped) included."""
    ticks = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # after the name: state(0) ppid ... utime(11) stime(12) cutime(13) cstime(14)
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLK_TCK


def pss_bytes(root: int) -> int:
    """Proportional set size of the tree: shared pages divided among those that map them."""
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


class Meter:
    """CPU seconds of a process tree since a start mark, and its idle rate for subtracting."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu0 = cpu_seconds(pid)
        self._t0 = time.monotonic()

    def restart(self) -> None:
        self._cpu0 = cpu_seconds(self.pid)
        self._t0 = time.monotonic()

    def read(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) since the mark."""
        return cpu_seconds(self.pid) - self._cpu0, time.monotonic() - self._t0


def stop_strays(grace: float = 3.0) -> None:
    """Stop every child process of this one that is still running, by its PID.

    The harness stops what it started when startup fails with an error, but not when Ctrl-C
    lands between starting a process and handing it over; those are found here. Each child
    leads a session of its own, so its group (Kamailio's workers) is killed with it.
    """
    me = os.getpid()
    strays = [pid for pid in tree(me) if pid != me and _running(pid) and _ppid(pid) == me]
    for pid in strays:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(pid) for pid in strays):
        time.sleep(0.05)
    for pid in strays:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def _ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def _running(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


# --- the balancer under test ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """A running balancer: siplb or Kamailio."""

    name: str
    pid: int
    address: Address
    stop: Callable[[], object]


def start_subject(
    name: str, workdir: Path, destinations: Sequence[str], *, siplb_extra: str = ""
) -> Subject:
    """Start ``siplb`` or the anchor (``kamailio``) in front of ``destinations`` (SIP URIs)."""
    if name == "kamailio" and _anchor.config is None:
        proc = siplb_harness.start_siplb(workdir, destinations, extra=ANCHOR_SIPLB_EXTRA)
        return Subject("kamailio", proc.pid, proc.address, proc.stop)
    if name == "siplb":
        proc = siplb_harness.start_siplb(workdir, destinations, extra=siplb_extra)
        return Subject("siplb", proc.pid, proc.address, proc.stop)
    if name == "kamailio":
        kam = kamailio_harness.start_kamailio(
            destinations,
            workdir,
            config=_anchor.config,
            tcp=_anchor.tcp,
            shm_mb=KAMAILIO_SHM_MB,
            pkg_mb=KAMAILIO_PKG_MB,
        )
        return Subject("kamailio", kam.pid, kam.address, kam.stop)
    raise ValueError(f"unknown balancer {name!r}; one of {SUBJECTS}")


# --- a whole run ---------------------------------------------------------------------------------


class Lab:
    """The processes of one run, in one work directory; all stopped on exit, whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._sipps: list[sipp.SippProcess] = []
        self._subjects: list[Subject] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the caller first, then the balancer, then the callees; never raises.

        A second Ctrl-C while stopping is ignored, so that nothing is left running."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._close()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _close(self) -> None:
        callers = [p for p in self._sipps if p.role == "uac"]
        callees = [p for p in self._sipps if p.role == "uas"]
        with contextlib.suppress(Exception):
            sipp.stop_all(callers)
        for subject in self._subjects:
            with contextlib.suppress(Exception):
                subject.stop()
        with contextlib.suppress(Exception):
            sipp.stop_all(callees)
        self._sipps.clear()
        self._subjects.clear()
        stop_strays()

    def callees(self, count: int, *, lifetime_s: float, max_calls: int) -> list[sipp.SippProcess]:
        for _ in range(count):
            self._sipps.append(
                sipp.start_uas(self.workdir, "uas.xml", timeout_s=lifetime_s, max_calls=max_calls)
            )
        return [p for p in self._sipps if p.role == "uas"]

    def balancer(self, name: str, destinations: Sequence[str], *, siplb_extra: str = "") -> Subject:
        subject = start_subject(name, self.workdir, destinations, siplb_extra=siplb_extra)
        self._subjects.append(subject)
        return subject

    def _caller_scenario(self, hold_ms: int) -> Path:
        path = self.workdir / f"uac_hold{hold_ms}.xml"
        path.write_text(CALLER_TEMPLATE.read_text().replace("HOLD_MS", str(max(1, hold_ms))))
        return path

    def stop_callees(self) -> list[sipp.SippResult]:
        """Stop the callees gracefully (SIPp writes its final statistics); their results."""
        callees = [p for p in self._sipps if p.role == "uas"]
        results = sipp.stop_all(callees)
        self._sipps = [p for p in self._sipps if p.role != "uas"]
        return results

    def caller(
        self,
        target: Address,
        *,
        calls: int,
        rate: float,
        hold_ms: int,
        timeout_s: float,
        extra: Sequence[str] = (),
    ) -> sipp.SippProcess:
        uac = sipp.start_uac(
            target,
            self.workdir,
            self._caller_scenario(hold_ms),
            calls=calls,
            rate=rate,
            duration_ms=hold_ms,
            timeout_s=timeout_s,
            # SIPp's default cap on simultaneous calls (3 x hold x rate) is fine for long holds
            # but too tight for short ones at high rates; calls and time bound the run anyway
            limit=max(1000, calls),
            extra_args=extra,
        )
        self._sipps.append(uac)
        return uac
