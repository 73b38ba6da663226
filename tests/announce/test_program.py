"""``siplb announce`` for real: the program ExaBGP would run, against a real ``siplb run`` on
loopback whose destination answers its probes. The test plays ExaBGP: it reads the commands on
the program's stdout, writes acks to its stdin, and closes stdin at the end. The node is made
unhealthy by a drain, by hanging it (SIGSTOP) and by killing it (SIGKILL); each time the
withdraw must come within a second."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import ManagedProcess, free_port

LAB = Path(__file__).resolve().parent.parent / "anycast"
PREFIX = "10.99.0.1/32"
ANNOUNCE = f"announce route {PREFIX} next-hop self"
WITHDRAW = f"withdraw route {PREFIX} next-hop self"
WITHIN = 1.0  # seconds: the promise, from the node's failure to the withdraw


def node_config(sip: int, dest: int, admin: int) -> str:
    return f"""\
[[listen]]
address = "127.0.0.1:{sip}"

[[sets]]
name = "pbx"
destinations = [{{ uri = "sip:127.0.0.1:{dest}" }}]

[health]
interval = 0.5
timeout = 0.3
withdraw_delay = 0.5

[proxy]
grace_period = 0.2

[admin]
listen = "127.0.0.1:{admin}"
token = "announce-test-token"

[announce]
prefixes = ["{PREFIX}"]
interval = 0.2
timeout = 0.4
"""


class Exabgp:
    """The test's side of the process API: the program's stdout lines, its stdin."""

    def __init__(self, config: Path, cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "siplb", "announce", "-c", str(config)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(cwd / "announce.stderr").open("wb"),
            text=True,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def expect(self, command: str, within: float) -> float:
        """Wait for ``command`` (nothing else may come first); when it came. Acks it."""
        try:
            at, line = self.lines.get(timeout=within)
        except queue.Empty:
            pytest.fail(f"no {command!r} within {within} s")
        assert line == command
        assert self.popen.stdin is not None
        self.popen.stdin.write("done\n")
        self.popen.stdin.flush()
        return at

    def quiet(self, seconds: float) -> None:
        """Nothing is written for ``seconds``."""
        with pytest.raises(queue.Empty):
            self.lines.get(timeout=seconds)

    def close(self) -> int | None:
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            self.popen.stdin.close()
        try:
            return self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return None


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        process.stop()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siplb", *args], capture_output=True, text=True, timeout=10
    )


def wait_healthy(config: Path, deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if run("health", "-c", str(config)).returncode == 0:
            return
        time.sleep(0.05)
    pytest.fail(f"not healthy within {deadline} s: {run('health', '-c', str(config)).stdout}")


def test_announce_withdraw_on_drain_hang_and_death(
    workdir: Path, processes: list[ManagedProcess]
) -> None:
    sip, dest, admin = free_port(), free_port(), free_port()
    config = workdir / "node.toml"
    config.write_text(node_config(sip, dest, admin))
    responder = ManagedProcess(
        "responder",
        [sys.executable, str(LAB / "responder.py"), "127.0.0.1", str(dest)],
        cwd=workdir,
    )
    processes.append(responder)
    siplb = ManagedProcess(
        "siplb", [sys.executable, "-m", "siplb", "run", "-c", str(config)], cwd=workdir
    )
    processes.append(siplb)
    wait_healthy(config, 10.0)

    exabgp = Exabgp(config, workdir)
    try:
        exabgp.expect(ANNOUNCE, 2.0)
        exabgp.quiet(0.5)  # announced once, not at every check

        assert run("node", "drain", "-c", str(config)).returncode == 0
        exabgp.expect(WITHDRAW, WITHIN)
        assert run("health", "-c", str(config)).returncode == 1
        assert run("node", "resume", "-c", str(config)).returncode == 0
        exabgp.expect(ANNOUNCE, WITHIN)

        hung = time.monotonic()
        siplb.signal(signal.SIGSTOP)
        gone = exabgp.expect(WITHDRAW, WITHIN) - hung
        print(f"\nsiplb hung (SIGSTOP): withdraw command after {gone * 1000:.0f} ms")
        siplb.signal(signal.SIGCONT)
        exabgp.expect(ANNOUNCE, WITHIN)

        killed = time.monotonic()
        siplb.signal(signal.SIGKILL)
        gone = exabgp.expect(WITHDRAW, WITHIN) - killed
        print(f"siplb killed (SIGKILL): withdraw command after {gone * 1000:.0f} ms")
        assert run("health", "-c", str(config)).returncode == 2
    finally:
        code = exabgp.close()
    assert code == 0, (workdir / "announce.stderr").read_text()


def test_announce_without_an_announce_table_exits_2(workdir: Path) -> None:
    config = workdir / "node.toml"
    text = node_config(free_port(), free_port(), free_port())
    config.write_text(text[: text.index("[announce]")])
    done = run("announce", "-c", str(config))
    assert done.returncode == 2
    assert "no [announce] table" in done.stderr
