"""siplb against Kamailio 5.6, side by side, on loopback: ``python bench/run.py``.

    python bench/run.py                      # every figure, 3 pairs (about 20 minutes)
    python bench/run.py --pairs 5            # more pairs
    python bench/run.py --only cpu,sweep     # some figures: cpu500 cpu2000 (cpu) sweep latency memory
    python bench/run.py --quick              # shorter runs, 1 pair: tries the machinery
    python bench/run.py --smoke              # one short pair at 50 calls/s (about 15 s)
    python bench/run.py --cluster            # siplb as a [cluster] node (a real Redis on loopback)
    python bench/run.py --anchor reference   # Kamailio with the heavier end-to-end configuration

SIPp (Debian ``sip-tester``) is the caller and two callees; the balancer under test sits in
between: ``siplb run`` with the end-to-end harness's config (round robin over the two callees,
OPTIONS probes every second), or Kamailio with ``bench/kamailio/lean.cfg`` (the same job and no
more; ``--anchor reference`` runs the end-to-end tests' heavier ``dispatcher.cfg`` instead).
Runs alternate siplb and Kamailio (A B A B ...); each figure is reported as the siplb/Kamailio
ratio of every pair, with its minimum, median and maximum (see ``figures.py``).

Results go to ``bench/results/latest.json`` (``--out``) with every run's raw numbers, and a
Markdown table is printed. Every process is stopped by PID when a run ends, fails, or the
benchmark is interrupted (Ctrl-C, SIGTERM); then the partial results are still written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO / "tests"), str(REPO / "src")]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from figures import SMOKE, Plan, SubjectResult, measure, select  # noqa: E402
from lab import ANCHORS, SUBJECTS, use_anchor  # noqa: E402

RESULTS = BENCH / "results"
# siplb's settings for the benchmark beyond the harness's config: a short drain on stop
SIPLB_PROXY = ("grace_period = 1.0",)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    # sipp -v prints its version and exits 99; git outside a clone prints only to stderr
    text = (
        done.stdout.strip() or (done.stderr.strip() if done.returncode == 0 else "")
    ).splitlines()
    return text[0] if text else "?"


def host_info() -> dict[str, Any]:
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = None
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uvloop_version,
        "sipp": _version(["sipp", "-v"]).strip(),
        "kamailio": _version([kamailio, "-v"]),
        "rmem_max": Path("/proc/sys/net/core/rmem_max").read_text().strip(),
        "siplb_commit": _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        # "compiled" (mypyc, make compile) or "pure": what ``siplb run`` ran
        "siplb_build": _version([sys.executable, "-m", "siplb", "--version"]),
        "siplb_src": str(REPO / "src"),
    }


# --- ratios and the table ------------------------------------------------------------------------


def ratio(siplb: float | None, kamailio: float | None) -> float | None:
    if siplb is None or kamailio is None or kamailio == 0:
        return None
    return siplb / kamailio


def summarize(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    out: dict[str, Any] = {}
    for subject in SUBJECTS:
        out[subject] = spread(
            [p[subject]["value"] for p in pairs if p[subject]["value"] is not None]
        )
    out["ratio"] = spread([p["ratio"] for p in pairs if p["ratio"] is not None])
    return out


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "bytes":
        return f"{value / 1024:.2f} KiB"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:g}"


def table(figures: dict[str, Any], anchor: str = "Kamailio", subject: str = "siplb") -> str:
    lines = [
        f"| figure | {subject} (median) | {anchor} (median) | ratio min / median / max "
        f"| target | failed calls {subject} / {anchor} |",
        "|---|---|---|---|---|---|",
    ]
    for entry in figures.values():
        summary = entry["summary"]
        unit = entry["unit"]
        values = [
            _fmt((summary[s] or {}).get("median"), unit) if summary[s] else "n/a" for s in SUBJECTS
        ]
        r = summary["ratio"]
        ratios = f"{r['min']:.2f} / {r['median']:.2f} / {r['max']:.2f}" if r else "n/a"
        failed = [
            sum(run["failed"] for pair in entry["pairs"] for run in pair[s]["runs"])
            for s in SUBJECTS
        ]
        lines.append(
            f"| {entry['title']} ({entry['better']} is better) | {values[0]} | {values[1]} "
            f"| {ratios} | {entry['target'] or '-'} | {failed[0]} / {failed[1]} |"
        )
    return "\n".join(lines)


def sweep_curve(entry: dict[str, Any], names: tuple[str, str] = SUBJECTS) -> str:
    """The sweep's steps, pair by pair: offered rate, answered calls per second, failures, and
    the share of calls whose setup (INVITE to 200) took 10 ms or more."""
    lines = [
        "| pair | balancer | calls/s offered | answered/s | failed | retrans | refused early "
        "| setup >= 10 ms |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for index, pair in enumerate(entry["pairs"], 1):
        for subject, name in zip(SUBJECTS, names, strict=True):
            for run in pair[subject]["runs"]:
                seconds = run["calls"] / run["rate"]
                slow = 100 * run["setup_over_10ms"] / max(1, run["successful"])
                lines.append(
                    f"| {index} | {name} | {run['rate']:g} | {run['successful'] / seconds:.0f} "
                    f"| {run['failed']} | {run['retransmissions']} "
                    f"| {max(0, run['calls'] - run['reached_callees'])} | {slow:.2f} % |"
                )
    return "\n".join(lines)


# --- running ----------------------------------------------------------------------------------


def run_plan(
    plan: Plan, pairs: int, workdir: Path, siplb_extra: str, figures: dict[str, Any]
) -> None:
    """Run one figure's pairs into ``figures[plan.name]`` (filled pair by pair, so that an
    interrupted benchmark still reports the pairs it finished)."""
    entry: dict[str, Any] = {
        "title": plan.title,
        "unit": plan.unit,
        "better": plan.better,
        "target": plan.target,
        "plan": {
            "rate": plan.rate,
            "seconds": plan.seconds,
            "calls": plan.call_count,
            "hold_ms": plan.hold_ms,
            "rates": list(plan.rates),
        },
        "pairs": [],
    }
    figures[plan.name] = entry
    for index in range(pairs):
        print(f"{plan.name}: pair {index + 1} of {pairs}", flush=True)
        results: dict[str, SubjectResult] = {}
        for subject in SUBJECTS:
            where = workdir / plan.name / f"{index + 1}-{subject}"
            results[subject] = measure(plan, subject, where, _log, siplb_extra)
        entry["pairs"].append(
            {
                **{s: r.to_json() for s, r in results.items()},
                "ratio": ratio(results["siplb"].value, results["kamailio"].value),
            }
        )
        entry["summary"] = summarize(entry["pairs"])


def rescore_sweep(entry: dict[str, Any]) -> None:
    """Recompute a stored sweep's values (highest clean rate) and summary from its runs."""
    for pair in entry["pairs"]:
        for subject in SUBJECTS:
            clean = [run["rate"] for run in pair[subject]["runs"] if run["clean"]]
            pair[subject]["value"] = float(max(clean, default=0.0))
        pair["ratio"] = ratio(pair["siplb"]["value"], pair["kamailio"]["value"])
    entry["summary"] = summarize(entry["pairs"])


def print_report(report: dict[str, Any]) -> None:
    done = {k: v for k, v in report["figures"].items() if "summary" in v}
    anchor = ANCHORS[report.get("anchor", {}).get("name", "lean")]
    extra = report.get("siplb_extra", "").splitlines()
    subject = ", ".join(["siplb", *(line for line in extra if line.startswith("workers"))])
    print(table(done, anchor.label, subject))
    if "sweep" in done:
        print()
        print(sweep_curve(done["sweep"], (subject, anchor.label)))


def _log(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="siplb/Kamailio pairs (3)")
    parser.add_argument(
        "--only", help="comma-separated: cpu, cpu500, cpu2000, sweep, latency, memory"
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, 1 pair by default")
    parser.add_argument("--smoke", action="store_true", help="one short pair at 50 calls/s")
    parser.add_argument("--out", type=Path, help="JSON results (bench/results/latest.json)")
    parser.add_argument("--report", type=Path, metavar="JSON", help="only print a results file")
    parser.add_argument("--workdir", type=Path, help="logs of every run (bench/results/work)")
    parser.add_argument(
        "--siplb-proxy",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [proxy] setting for siplb, e.g. overload_backlog=0 (repeatable)",
    )
    parser.add_argument(
        "--anchor",
        choices=sorted(ANCHORS),
        default="lean",
        help="what siplb is compared with: Kamailio's lean configuration (the same job as "
        "siplb, default) or its reference one, or siplb as one process (with --siplb-proxy "
        "workers=2: what two workers cost)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="run siplb as a one-node [cluster] against a redis-server started on loopback",
    )
    return parser.parse_args(argv)


def cluster_section(workdir: Path) -> tuple[str, Any]:
    """A started redis-server on a loopback port and the ``[cluster]`` section that uses it."""
    sys.path.insert(0, str(REPO / "tests" / "redis"))
    from redis_servers import RedisServer, free_port

    server = RedisServer(workdir / "redis")
    server.start()
    section = (
        f'\n[cluster]\nnode_id = "b1"\nredis = "redis://127.0.0.1:{server.port}/0"\n'
        f'peer = "127.0.0.1:{free_port()}"\nsecret = "{os.urandom(24).hex()}"\n'
    )
    return section, server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        stored = json.loads(args.report.read_text())
        if "sweep" in stored["figures"]:
            rescore_sweep(stored["figures"]["sweep"])
        print_report(stored)
        return 0
    if args.smoke:
        plans, pairs = [SMOKE], args.pairs or 1
        default_out = RESULTS / "smoke.json"
    else:
        try:
            plans = select(args.only, quick=args.quick)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        pairs = args.pairs or (1 if args.quick else 3)
        default_out = RESULTS / "latest.json"
    out_path: Path = args.out or default_out
    workdir: Path = args.workdir or out_path.parent / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # SIGINT too: a shell starts a background job with SIGINT ignored, which Python keeps
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    anchor = use_anchor(args.anchor)
    report: dict[str, Any] = {
        "command": " ".join(
            ["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": host_info(),
        "pairs": pairs,
        "anchor": {
            "name": anchor.name,
            "config": str(anchor.config.relative_to(REPO)) if anchor.config else None,
        },
        "figures": {},
        "complete": False,
    }
    proxy_lines = [*SIPLB_PROXY, *(line.replace("=", " = ", 1) for line in args.siplb_proxy)]
    siplb_extra = "[proxy]\n" + "\n".join(proxy_lines) + "\n"
    redis = None
    if args.cluster:
        section, redis = cluster_section(workdir)
        siplb_extra += section
    report["siplb_extra"] = siplb_extra
    started = time.monotonic()
    try:
        for plan in plans:
            run_plan(plan, pairs, workdir, siplb_extra, report["figures"])
        report["complete"] = True
    except KeyboardInterrupt:
        print("interrupted: every process was stopped; partial results follow", file=sys.stderr)
    finally:
        if redis is not None:
            redis.stop()
        report["seconds"] = round(time.monotonic() - started, 1)
        report["load_average_after"] = os.getloadavg()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print_report(report)
    print(f"\nresults: {out_path} ({report['seconds']} s)")
    return 0 if report["complete"] else 130


if __name__ == "__main__":
    sys.exit(main())
