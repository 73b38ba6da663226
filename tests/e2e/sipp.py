"""End-to-end harness: SIPp callers and callees on loopback around a proxy under test.

Topology: UAC (SIPp) -> proxy (siplb, or Kamailio as the reference) -> N UAS (SIPp).
All scenarios under ``scenarios/`` follow Record-Route (see each file's header) and
work over UDP (``transport="udp"``, SIPp ``-t u1``) and TCP (``"tcp"``, ``-t t1``).

API
===

Scenarios (``SCENARIOS / name``):
    uac.xml         INVITE/SDP, 1xx, 200 (route set saved), ACK, pause (-d), BYE, 200;
                    a 4xx-6xx to the INVITE fails the call (SIPp ACKs it itself)
    uac_cancel.xml  INVITE, 180, pause (-d), CANCEL, 200, 487, ACK (hop-by-hop)
    uas.xml         INVITE -> 180 -> 200 (Record-Route echoed), ACK, BYE -> 200
    uas_ring.xml    INVITE -> 180, CANCEL -> 200, 487, ACK
    uas_503.xml     INVITE -> 503, ACK
    uas_486.xml     INVITE -> 486, ACK
    Every UAS scenario answers OPTIONS probes with 200 (an answered probe ends as a
    successful SIPp "call": count calls with ``stats.calls_received``).

SIPp (this module):
    sipp_binary() -> str
        Path of sipp; raises SippMissing (says ``make test`` installs it) if absent.
    start_uas(workdir, scenario="uas.xml", *, transport="udp", host=LOOPBACK,
              port=None, timeout_s=60, max_calls=100_000, name=None, trace_msg=False,
              extra_args=()) -> SippProcess
        A callee listening on host:port (a free port when None); returns once bound.
        timeout_s is its hard lifetime (SIPp -timeout); max_calls bounds -m
        (answered probes count).
    start_uases(count, workdir, scenario="uas.xml", **kwargs) -> list[SippProcess]
    start_uac(target, workdir, scenario="uac.xml", *, calls=200, rate=50.0,
              transport="udp", duration_ms=100, timeout_s=30, limit=None, ...)
              -> SippProcess
        A caller placing `calls` calls at `rate` cps to target (host, port); it
        exits by itself after the last call, or fails at `timeout_s`.
    run_uac(target, workdir, ...same...) -> SippResult
        start_uac, wait for its exit (hard bound: timeout_s + a margin), result.
    SippProcess
        .name .role .scenario .transport .host .port .address .sip_uri .pid .workdir
        .running() -> bool
        .wait(timeout) -> SippResult          the UAC's way to finish
        .stop() -> SippResult                 SIGUSR1 (graceful: final statistics),
                                              again to force, then SIGTERM, SIGKILL
        .result() -> SippResult               parse the files as they are now
    SippResult
        .name .role .scenario .returncode .timed_out .stats .errors .workdir
        .describe() -> str                    summary + error log, for assert messages
        .message_log() -> str                 the -trace_msg log (trace_msg=True)
        .sent_start_lines() -> list[str]      start lines of all messages sent
    SippStats (from the -trace_stat CSV and -trace_counts CSV, last rows)
        .successful_calls .failed_calls .retransmissions .incoming_calls
        .outgoing_calls .current_calls .raw (stat CSV row) .messages (counts row)
        .received(what) / .sent(what) / .retransmitted(what) / .timeouts(what) /
        .unexpected(what) -> int              summed over the scenario's steps;
                                              `what` is a method or a status code
        .cumulative(counter) -> int           any "(C)" column, e.g. "FailedMaxUDPRetrans"
        .calls_received -> int                INVITEs received (a UAS's calls)
    stop_all(processes) -> list[SippResult]   stop several; never raises for one

Kamailio (``kamailio.py``):
    kamailio_binary() -> str ; kamailio_module_dir() -> str
    start_kamailio(destinations, workdir, *, host=LOOPBACK, port=None, ping_interval=1,
                   fr_timer_ms=1500, config=DISPATCHER_CFG, shm_mb=64, pkg_mb=8)
                   -> KamailioProcess
        Writes dispatcher.list (set 1, one SIP URI per destination: SippProcess.sip_uri),
        starts ``kamailio -DD -E -f ... -l udp:H:P -l tcp:H:P -w -Y -P -m -M`` and
        returns once it answers OPTIONS.
    KamailioProcess: .address .pid .workdir .log() -> str .stop() -> int | None

Plumbing (``harness.py``):
    free_port(host=LOOPBACK, *, span=1) -> int      UDP+TCP free, never reused
    wait_bound(host, port, transport, *, timeout, process=None)
    send_udp(data | [data...], address, *, wait=0.0, source=None) -> list[bytes]
    sip_ping(address, *, timeout=1.0) -> bytes | None
    wait_sip_ready(address, *, timeout=5.0, process=None) -> bytes
    ManagedProcess: start with output files, stop by PID (signal steps)

pytest fixtures (``conftest.py``): ``e2e_workdir`` (a temp dir kept for inspection),
``sipp`` (a SippLauncher: .uas/.uases/.uac/.run_uac/.stop_uases, every process
stopped at teardown), ``kamailio`` (a factory: kamailio(destinations, **kwargs)), both failing
with a clear message when a binary is missing.

SIPp notes (3.6.1): in server mode every unknown Call-ID becomes a call, so ``-aa``
answers an OPTIONS probe but leaves a call waiting for an INVITE for ever (it would
also block the graceful stop): the UAS scenarios answer OPTIONS themselves.
``<timewait>`` must be the last message of a scenario; a variable set but never
read must be listed in ``<Reference>``; ``[last_*]`` is not expanded in
``assignstr``; ``<exec int_cmd="stop_call"/>`` ends a call as *successful*, so a
caller's failure branch cannot count a failure (uac.xml leaves failure responses
to SIPp's unexpected-message handling, which counts them and ACKs). SIGTERM ends
SIPp without final statistics; SIGUSR1 (or ``q`` on the control port) stops it
gracefully and writes them, a second one forces the exit (calls still open are
then neither successful nor failed: see ``current_calls``). Each SIPp binds its
media port P and P+2 and a control port (default 8888): all are allocated here.
``-trace_counts`` has no file-name option: it writes ``<scenario>_<pid>_counts.csv``
in the working directory, which is the work directory here.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import (
    LOOPBACK,
    Address,
    HarnessError,
    ManagedProcess,
    StopStep,
    free_port,
    read_tail,
    wait_bound,
)

_SENT_START = re.compile(r"message sent \(\d+ bytes\):\s*\n\s*([^\r\n]+)")

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

TRANSPORTS: Mapping[str, str] = {"udp": "u1", "tcp": "t1"}

UAC_MARGIN_S = 10.0
STAT_FREQUENCY_S = 1
MEDIA_SPAN = 4  # SIPp binds the media port and media port + 2 (audio, video)
UAS_STOP: tuple[StopStep, ...] = (
    StopStep(signal.SIGUSR1, 3.0),  # graceful: wait for calls, write final statistics
    StopStep(signal.SIGUSR1, 2.0),  # a second request forces the exit
    StopStep(signal.SIGTERM, 2.0),
    StopStep(signal.SIGKILL, 2.0),
)

INSTALL_HINT = (
    "SIPp (`sipp`, Debian package sip-tester) is required by the end-to-end tests; "
    "`make test` installs it"
)


class SippMissing(HarnessError):
    """The sipp binary is not installed."""


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SippMissing(INSTALL_HINT)
    return path


# --- statistics --------------------------------------------------------------------------------


def _last_row(path: Path) -> dict[str, str]:
    """The header and last data row of a SIPp CSV (';' separated), as a dict."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    header, last = next(csv.reader([lines[0]], delimiter=";")), lines[-1]
    values = next(csv.reader([last], delimiter=";"))
    return {key: value for key, value in zip(header, values, strict=False) if key}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class SippStats:
    """Final (or latest) statistics of one SIPp process."""

    successful_calls: int = 0
    failed_calls: int = 0
    retransmissions: int = 0
    incoming_calls: int = 0
    outgoing_calls: int = 0
    current_calls: int = 0
    raw: Mapping[str, str] = field(default_factory=dict)
    messages: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_files(cls, stat_csv: Path, counts_csv: Path | None) -> SippStats:
        row = _last_row(stat_csv)
        counts = _last_row(counts_csv) if counts_csv is not None else {}
        messages = {
            key: _int(value)
            for key, value in counts.items()
            if key not in ("CurrentTime", "ElapsedTime")
        }
        return cls(
            successful_calls=_int(row.get("SuccessfulCall(C)")),
            failed_calls=_int(row.get("FailedCall(C)")),
            retransmissions=_int(row.get("Retransmissions(C)")),
            incoming_calls=_int(row.get("IncomingCall(C)")),
            outgoing_calls=_int(row.get("OutgoingCall(C)")),
            current_calls=_int(row.get("CurrentCall")),
            raw=row,
            messages=messages,
        )

    def _sum(self, what: str, kind: str) -> int:
        # Counts columns are "<step>_<message>_<kind>", e.g. "1_INVITE_Recv", "3_200_Sent".
        total = 0
        for key, value in self.messages.items():
            step, _, rest = key.partition("_")
            name, _, column = rest.rpartition("_")
            if step.isdigit() and name == what and column == kind:
                total += value
        return total

    def received(self, what: str | int) -> int:
        return self._sum(str(what), "Recv")

    def sent(self, what: str | int) -> int:
        return self._sum(str(what), "Sent")

    def retransmitted(self, what: str | int) -> int:
        return self._sum(str(what), "Retrans")

    def timeouts(self, what: str | int) -> int:
        return self._sum(str(what), "Timeout")

    def unexpected(self, what: str | int) -> int:
        return self._sum(str(what), "Unexp")

    def cumulative(self, counter: str) -> int:
        """A cumulative counter of the stat CSV by name, e.g. "FailedMaxUDPRetrans"."""
        return _int(self.raw.get(f"{counter}(C)"))

    @property
    def calls_received(self) -> int:
        return self.received("INVITE")


@dataclass(frozen=True, slots=True)
class SippResult:
    name: str
    role: str
    scenario: str
    returncode: int | None
    timed_out: bool
    stats: SippStats
    errors: str
    workdir: Path

    def message_log(self) -> str:
        """The -trace_msg log ('' unless started with trace_msg=True)."""
        return read_tail(self.workdir / f"{self.name}_messages.log", 50_000_000)

    def sent_start_lines(self) -> list[str]:
        """Start line of every message SIPp sent, from the -trace_msg log, in order.

        Includes what SIPp sends on its own (ACK for a failure response, CANCEL
        or BYE when it aborts a call), which the scenario counts do not show.
        """
        return _SENT_START.findall(self.message_log())

    def describe(self) -> str:
        s = self.stats
        lines = [
            f"{self.name} ({self.role}, {self.scenario}) exit={self.returncode} "
            f"timed_out={self.timed_out} workdir={self.workdir}",
            f"  successful={s.successful_calls} failed={s.failed_calls} "
            f"retransmissions={s.retransmissions} incoming={s.incoming_calls} "
            f"outgoing={s.outgoing_calls} current={s.current_calls}",
            "  messages: "
            + ", ".join(f"{k}={v}" for k, v in s.messages.items() if v and "_Pause_" not in k),
        ]
        if self.errors.strip():
            lines.append("  errors:\n" + self.errors.strip()[-2500:])
        return "\n".join(lines)


# --- processes ---------------------------------------------------------------------------------


class SippProcess:
    """One running SIPp, its files in ``workdir/<name>.*``."""

    def __init__(
        self,
        *,
        name: str,
        role: str,
        scenario: Path,
        transport: str,
        host: str,
        port: int,
        workdir: Path,
        argv: Sequence[str],
        timeout_s: float,
    ) -> None:
        self.name = name
        self.role = role
        self.scenario = scenario
        self.transport = transport
        self.host = host
        self.port = port
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.stat_path = workdir / f"{name}_stats.csv"
        self.error_path = workdir / f"{name}_errors.log"
        self.process = ManagedProcess(name, argv, cwd=workdir)
        self.pid = self.process.pid
        self._final: SippResult | None = None

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def sip_uri(self) -> str:
        """Where a proxy reaches this SIPp (a dispatcher destination)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        uri = f"sip:{host}:{self.port}"
        return uri + (";transport=tcp" if self.transport == "tcp" else "")

    def running(self) -> bool:
        return self.process.poll() is None

    def _counts_path(self) -> Path | None:
        # -trace_counts names its file after the scenario and the PID, in the cwd.
        path = self.workdir / f"{self.scenario.stem}_{self.pid}_counts.csv"
        return path if path.exists() else None

    def result(self) -> SippResult:
        if self._final is not None:
            return self._final
        errors = read_tail(self.error_path, 20000)
        stderr = "\n".join(
            line
            for line in read_tail(self.process.stderr_path, 5000).splitlines()
            if not line.startswith("Resolving remote host")
        )
        if stderr.strip():
            errors = f"{errors}\n[stderr]\n{stderr}" if errors.strip() else stderr
        result = SippResult(
            name=self.name,
            role=self.role,
            scenario=self.scenario.name,
            returncode=self.process.returncode,
            timed_out="timed out after" in errors,
            stats=SippStats.from_files(self.stat_path, self._counts_path()),
            errors=errors,
            workdir=self.workdir,
        )
        if self.process.returncode is not None:
            self._final = result
        return result

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit by itself (a UAC), stopping it past the bound."""
        bound = self.timeout_s + UAC_MARGIN_S if timeout is None else timeout
        if self.process.wait(bound) is None:
            self.process.stop(UAS_STOP)
            result = self.result()
            raise HarnessError(f"{self.name} still running after {bound} s\n{result.describe()}")
        return self.result()

    def stop(self) -> SippResult:
        """Stop gracefully (final statistics written), forcing it if it lingers."""
        self.process.stop(UAS_STOP)
        return self.result()


def _common_args(
    *,
    scenario: Path,
    name: str,
    transport: str,
    host: str,
    port: int,
    timeout_s: float,
    trace_msg: bool,
    netns: str | None = None,
) -> list[str]:
    if netns is None:
        media, control = free_port(host, span=MEDIA_SPAN), free_port(host)
        args = []
    else:  # a namespace of the test's own: its ports are all free; SIP port + 1000 and + 2000
        media, control = port + 1000, port + 2000
        args = ["ip", "netns", "exec", netns]
    args += [
        sipp_binary(),
        "-sf",
        str(scenario),
        "-t",
        TRANSPORTS[transport],
        "-i",
        host,
        "-p",
        str(port),
        "-mi",
        host,
        "-mp",
        str(media),
        "-ci",
        host,
        "-cp",
        str(control),
        "-nostdin",
        "-timeout",
        f"{round(timeout_s)}s",
        "-timeout_error",
        "-trace_stat",
        "-stf",
        f"{name}_stats.csv",
        "-fd",
        str(STAT_FREQUENCY_S),
        "-trace_counts",
        "-trace_err",
        "-error_file",
        f"{name}_errors.log",
        "-trace_screen",
        "-screen_file",
        f"{name}_screen.log",
    ]
    if trace_msg:
        args += ["-trace_msg", "-message_file", f"{name}_messages.log"]
    return args


def wait_bound_in(
    netns: str, port: int, transport: str, *, timeout: float, process: ManagedProcess
) -> None:
    """Wait until something in namespace ``netns`` listens on ``port`` (``ss``)."""
    flag = "-lun" if transport == "udp" else "-ltn"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HarnessError(f"{process.name} exited before binding port {port}")
        listing = subprocess.run(
            ["ip", "netns", "exec", netns, "ss", "-H", flag, f"sport = :{port}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if listing.stdout.strip():
            return
        time.sleep(0.05)
    raise HarnessError(f"nothing bound port {port} in {netns} within {timeout} s")


def _scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    if not path.is_absolute():
        path = SCENARIOS / path
    if not path.is_file():
        raise HarnessError(f"no SIPp scenario at {path}")
    return path


def _check_transport(transport: str) -> None:
    if transport not in TRANSPORTS:
        raise HarnessError(f"transport must be one of {sorted(TRANSPORTS)}, not {transport!r}")


_counter = 0


def _name(prefix: str, name: str | None) -> str:
    global _counter
    _counter += 1
    return name or f"{prefix}{_counter}"


def start_uas(
    workdir: Path,
    scenario: str | Path = "uas.xml",
    *,
    transport: str = "udp",
    host: str = LOOPBACK,
    port: int | None = None,
    timeout_s: float = 60.0,
    max_calls: int = 100_000,
    name: str | None = None,
    trace_msg: bool = False,
    extra_args: Sequence[str] = (),
    netns: str | None = None,
) -> SippProcess:
    """Start a callee and return once its SIP socket is bound (in network namespace
    ``netns`` when given: then ``port`` is required, and its media and control ports are
    ``port`` + 1000 and + 2000)."""
    _check_transport(transport)
    path = _scenario_path(scenario)
    if port is None:
        if netns is not None:
            raise HarnessError("a SIPp in a namespace needs its port")
        port = free_port(host)
    name = _name("uas", name)
    argv = _common_args(
        scenario=path,
        name=name,
        transport=transport,
        host=host,
        port=port,
        timeout_s=timeout_s,
        trace_msg=trace_msg,
        netns=netns,
    )
    argv += ["-aa", "-m", str(max_calls), *extra_args]
    uas = SippProcess(
        name=name,
        role="uas",
        scenario=path,
        transport=transport,
        host=host,
        port=port,
        workdir=workdir,
        argv=argv,
        timeout_s=timeout_s,
    )
    try:
        if netns is None:
            wait_bound(host, port, transport, timeout=5.0, process=uas.process)
        else:
            wait_bound_in(netns, port, transport, timeout=5.0, process=uas.process)
    except HarnessError:
        uas.stop()
        raise
    return uas


def start_uases(
    count: int,
    workdir: Path,
    scenario: str | Path = "uas.xml",
    **kwargs: Any,
) -> list[SippProcess]:
    """Start `count` callees with the same scenario and options."""
    started: list[SippProcess] = []
    try:
        for _ in range(count):
            # One by one, so that a failure stops those already started.
            started.append(start_uas(workdir, scenario, **kwargs))  # noqa: PERF401
    except BaseException:
        stop_all(started)
        raise
    return started


def start_uac(
    target: Address,
    workdir: Path,
    scenario: str | Path = "uac.xml",
    *,
    calls: int = 200,
    rate: float = 50.0,
    transport: str = "udp",
    duration_ms: int = 100,
    timeout_s: float = 30.0,
    limit: int | None = None,
    host: str = LOOPBACK,
    port: int | None = None,
    name: str | None = None,
    trace_msg: bool = False,
    extra_args: Sequence[str] = (),
    netns: str | None = None,
) -> SippProcess:
    """Start a caller placing `calls` calls at `rate` per second to `target` (from network
    namespace ``netns`` when given; then ``port`` is required)."""
    _check_transport(transport)
    if calls <= 0:
        raise HarnessError("a UAC needs a bounded, positive number of calls")
    path = _scenario_path(scenario)
    if port is None:
        if netns is not None:
            raise HarnessError("a SIPp in a namespace needs its port")
        port = free_port(host)
    name = _name("uac", name)
    argv = _common_args(
        scenario=path,
        name=name,
        transport=transport,
        host=host,
        port=port,
        timeout_s=timeout_s,
        trace_msg=trace_msg,
        netns=netns,
    )
    argv += ["-m", str(calls), "-r", f"{rate:g}", "-rp", "1000", "-d", str(duration_ms)]
    if limit is not None:
        argv += ["-l", str(limit)]
    target_host = f"[{target[0]}]" if ":" in target[0] else target[0]
    argv += [*extra_args, f"{target_host}:{target[1]}"]
    return SippProcess(
        name=name,
        role="uac",
        scenario=path,
        transport=transport,
        host=host,
        port=port,
        workdir=workdir,
        argv=argv,
        timeout_s=timeout_s,
    )


def run_uac(
    target: Address, workdir: Path, scenario: str | Path = "uac.xml", **kwargs: Any
) -> SippResult:
    """Run a caller to completion (bounded by its timeout) and return its result."""
    uac = start_uac(target, workdir, scenario, **kwargs)
    try:
        return uac.wait()
    finally:
        if uac.running():
            uac.stop()


def stop_all(processes: Iterable[SippProcess]) -> list[SippResult]:
    """Stop every process (in parallel: signal all, then wait); results in order."""
    procs = list(processes)
    for proc in procs:
        proc.process.signal(signal.SIGUSR1)
    deadline = time.monotonic() + UAS_STOP[0].wait
    for proc in procs:
        proc.process.wait(max(0.0, deadline - time.monotonic()))
    results = []
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.process.stop(UAS_STOP[1:])
        results.append(proc.result())
    return results
