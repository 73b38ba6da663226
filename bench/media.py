"""What media anchoring costs siplb: CPU per call with anchoring against without, offer latency.

    .venv/bin/python bench/media.py [--calls 300] [--rate 50] [--pairs 3]

Each pair runs the same bounded SIPp load (``uac.xml`` -> siplb -> ``uas.xml``, both with SDP)
twice, on fresh siplb processes: once with ``[media] anchor = "always"`` on a real rtpengine
(userspace), once with ``anchor = "never"`` (the same config otherwise). siplb's CPU time is read
from /proc/<pid>/stat (utime + stime) right before the load and after its last call ended; the
figure is CPU ms per call. The offer latency is the engine's, as siplb measured it (the admin
API's media view). Prints min / median / max over the pairs, and each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from e2e import sipp  # noqa: E402
from e2e.balancer import ADMIN_TOKEN, launch, write_config  # noqa: E402
from e2e.harness import LOOPBACK, free_port  # noqa: E402
from media.engine import running_engine  # noqa: E402
from media_calls.common import wait_up  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    anchor: str
    calls: int
    successful: int
    failed: int
    cpu_s: float
    offer_ms: tuple[float, float] | None  # median, max

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000.0 * self.cpu_s / max(1, self.successful)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def admin_json(port: int, path: str) -> object:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def offer_latency_ms(port: int) -> tuple[float, float] | None:
    """The engine's offer latency (median, max over its last offers) as siplb measured it,
    from ``/api/status``'s ``media`` object (None without one)."""
    status = admin_json(port, "/api/status")
    media = status.get("media") if isinstance(status, dict) else None
    engines = media.get("engines", []) if isinstance(media, dict) else []
    for engine in engines:
        p50, top = engine.get("offer_p50_ms"), engine.get("offer_max_ms")
        if isinstance(p50, (int, float)) and isinstance(top, (int, float)):
            return float(p50), float(top)
    return None


def one_run(workdir: Path, engine_address: str, anchor: str, calls: int, rate: float) -> Run:
    workdir.mkdir(parents=True)
    uas = sipp.start_uas(workdir, "uas.xml")
    try:
        port, admin = free_port(), free_port()
        config = workdir / "siplb.toml"
        media = f'\n[media]\nengines = ["{engine_address}"]\nanchor = "{anchor}"\n'
        write_config(config, port, [uas.sip_uri], extra=media, admin_port=admin)
        siplb = launch(workdir, config, (LOOPBACK, port), admin)
        try:
            wait_up(siplb, uas.sip_uri)
            before = cpu_seconds(siplb.pid)
            result = sipp.run_uac(
                (LOOPBACK, port), workdir, "uac.xml", calls=calls, rate=rate, timeout_s=60
            )
            cpu = cpu_seconds(siplb.pid) - before
            latency = offer_latency_ms(admin) if anchor == "always" else None
        finally:
            siplb.stop()
    finally:
        uas.stop()
    stats = result.stats
    return Run(
        anchor,
        calls,
        stats.successful_calls,
        stats.failed_calls,
        cpu,
        latency,
    )


def spread(values: list[float]) -> str:
    return f"min {min(values):.3f}  median {statistics.median(values):.3f}  max {max(values):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    runs: list[tuple[Run, Run]] = []
    with tempfile.TemporaryDirectory(prefix="siplb-media-bench-") as tmp:
        root = Path(tmp)
        with running_engine(root / "engine") as engine:
            for pair in range(args.pairs):
                on = one_run(root / f"on{pair}", engine.address, "always", args.calls, args.rate)
                off = one_run(root / f"off{pair}", engine.address, "never", args.calls, args.rate)
                runs.append((on, off))
                for run in (on, off):
                    print(
                        f"pair {pair} anchor={run.anchor:6} calls {run.successful}/{run.calls}"
                        f" failed {run.failed}  CPU {run.cpu_s:.3f} s"
                        f" = {run.cpu_ms_per_call:.3f} ms/call"
                        + (
                            f"  offer p50 {run.offer_ms[0]:.3f} ms max {run.offer_ms[1]:.3f} ms"
                            if run.offer_ms is not None
                            else ""
                        )
                    )
    on_cpu = [on.cpu_ms_per_call for on, _ in runs]
    off_cpu = [off.cpu_ms_per_call for _, off in runs]
    extra = [on - off for on, off in zip(on_cpu, off_cpu, strict=True)]
    print(f"CPU ms/call anchored:   {spread(on_cpu)}")
    print(f"CPU ms/call unanchored: {spread(off_cpu)}")
    print(f"anchoring adds ms/call: {spread(extra)}")
    latencies = [on.offer_ms[0] for on, _ in runs if on.offer_ms is not None]
    if latencies:
        print(f"offer latency p50 ms:   {spread(latencies)}")
    failed = sum(on.failed + off.failed for on, off in runs)
    print(f"failed calls: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
