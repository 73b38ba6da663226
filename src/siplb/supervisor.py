"""The parent of ``workers = N``: makes the shared sockets and memory, starts the workers, passes
SIGTERM/SIGINT and SIGHUP on to them, restarts a worker that dies, and frees what it made.

The parent runs no event loop: workers are forked from it, each starts its own (uvloop when
present). It keeps every socket open, so a restarted worker finds its share of the listeners,
and the datagrams queued meanwhile, where its predecessor left them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from siplb.config import Config
from siplb.io.shared import SharedCallCounts
from siplb.io.systemd import Notifier, NotifyRelay
from siplb.io.workers import WorkerSockets, open_worker_sockets
from siplb.logs import ListenerError

log = logging.getLogger("siplb")

POLL = 0.2  # how often the parent looks at its signals when no worker exits
QUICK_EXIT = 2.0  # a worker dying this soon after its start ...
QUICK_EXITS = 3  # ... this many times in a row stops siplb (a bad address, a port in use)
STOP_MARGIN = 5.0  # past the grace period, workers still running are killed


class Supervisor:
    def __init__(self, config_path: Path, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.workers = config.proxy.workers
        self._context = multiprocessing.get_context("fork")
        self.counts = SharedCallCounts.create(self.workers, self._context.Lock())
        udp = [
            (index, spec.host, spec.port, spec.recv_buffer)
            for index, spec in enumerate(config.listeners)
            if spec.transport == "udp"
        ]
        try:
            self.sockets: WorkerSockets = open_worker_sockets(udp, self.workers)
        except ListenerError as exc:
            self._free()
            spec = config.listeners[exc.index]
            raise ListenerError(exc.index, spec.name, "udp", spec.address, exc) from exc
        except OSError:
            self._free()
            raise
        self.processes: dict[int, BaseProcess] = {}
        self._started: dict[int, float] = {}
        self._quick: dict[int, int] = {}
        self._stopping = False
        self._stop_by: float | None = None
        self._pending: list[int] = []
        self.exit_codes: list[int | None] = []
        self.service = NotifyRelay(Notifier.from_environment())  # only the parent tells systemd

    def run(self) -> int:
        """Until every worker has stopped; 0 when all of them stopped cleanly."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            for worker in range(self.workers):
                self._start(worker)
            while self.processes:
                self._handle_signals()
                waited = [p.sentinel for p in self.processes.values()] + self.service.waitables()
                ready = wait(waited, timeout=POLL)
                self.service.poll([p.pid for p in self.processes.values()])
                self.service.tick(time.monotonic())
                if ready or not self._stopping:
                    self._reap()
                if self._stop_by is not None and time.monotonic() > self._stop_by:
                    self._kill_remaining()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for process in self.processes.values():
                process.kill()
                process.join(1.0)
            self._free()
            self.service.close()
        failed = [code for code in self.exit_codes if code != 0]
        return 1 if failed else 0

    # ---- workers ---------------------------------------------------------------------------
    def _start(self, worker: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self.config_path, self.config, worker, self.sockets, self.counts),
            name=f"siplb-worker-{worker}",
        )
        process.start()
        self.processes[worker] = process
        self._started[worker] = time.monotonic()
        log.info("worker %d started (pid %s)", worker, process.pid)

    def _reap(self) -> None:
        for worker, process in list(self.processes.items()):
            if process.is_alive():
                continue
            process.join()
            del self.processes[worker]
            code = process.exitcode
            if self._stopping:
                self.exit_codes.append(code)
                log.info("worker %d stopped (exit %s)", worker, code)
                continue
            self.counts.clear(worker)  # its calls ended with it
            quick = time.monotonic() - self._started[worker] < QUICK_EXIT
            self._quick[worker] = self._quick.get(worker, 0) + 1 if quick else 0
            if self._quick[worker] >= QUICK_EXITS:
                log.error("worker %d keeps failing at start (exit %s): stopping", worker, code)
                self.exit_codes.append(code if code else 1)
                self._stop(signal.SIGTERM)
                continue
            log.error("worker %d (pid %s) died (exit %s): restarting it", worker, process.pid, code)
            self._start(worker)

    # ---- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._pending.append(signum)

    def _handle_signals(self) -> None:
        while self._pending:
            signum = self._pending.pop(0)
            if signum == signal.SIGHUP:
                log.info("SIGHUP: every worker reloads")
                self.service.reloading()
                self._signal_all(signal.SIGHUP)
            elif not self._stopping:
                self._stop(signal.SIGTERM)

    def _stop(self, signum: int) -> None:
        self._stopping = True
        self.service.stopping()
        delay = self.config.readiness.withdraw_delay
        self._stop_by = time.monotonic() + delay + self.config.proxy.grace_period + STOP_MARGIN
        log.info(
            "stopping %d workers: unhealthy for %.1f s, then no new calls and %.1f s for "
            "transactions to finish",
            len(self.processes),
            delay,
            self.config.proxy.grace_period,
        )
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def _kill_remaining(self) -> None:
        for worker, process in self.processes.items():
            log.error("worker %d did not stop in time: killing it", worker)
            process.kill()
        self._stop_by = None

    def _free(self) -> None:
        if hasattr(self, "sockets"):
            self.sockets.close()
        self.counts.close()
        self.counts.unlink()


def _worker_main(
    config_path: Path,
    config: Config,
    worker: int,
    sockets: WorkerSockets,
    counts: SharedCallCounts,
) -> None:
    """The forked worker: its own signal handling and event loop."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    sockets.keep_only(worker)
    from siplb.io.driver import run_loop
    from siplb.logs import log_fields, set_worker
    from siplb.workers import serve_worker

    set_worker(worker)  # every line of this process says which worker wrote it
    try:
        code = run_loop(serve_worker(config_path, config, worker, sockets, counts))
    except OSError as exc:  # a port in use ...: one line, no traceback; the parent decides
        fields = getattr(exc, "fields", {})
        log_fields(log, logging.ERROR, "cannot start: %s", exc, errno=exc.errno, **fields)
        code = 1
    raise SystemExit(code)


def supervise(config_path: Path, config: Config) -> int:
    """``siplb run`` with ``[proxy] workers`` above 1."""
    return Supervisor(config_path, config).run()
