"""Where siplb spends its CPU under load: ``python bench/profile.py [--rate 500] [--seconds 20]``.

Runs the benchmark's setup (two SIPp callees, ``siplb run``, a SIPp caller, see ``lab.py``) at a
fixed rate and samples siplb with py-spy (``pip install py-spy``; ``py-spy record --pid``, in
non-blocking mode so the sampling does not slow siplb down). Prints the functions with the most
samples, by own time and including what they call, and keeps the collapsed stacks
(``bench/results/profile.txt``) for flame-graph tools.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO / "tests"), str(REPO / "src")]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from lab import Lab, cpu_seconds  # noqa: E402

RESULTS = BENCH / "results"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` as ``file.py:func``; the line number is dropped."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    short = path.split("site-packages/")[-1].split("/src/")[-1]
    return f"{short}:{match['func']}"


def summarize(collapsed: Path, top: int) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"{total} samples"]
    for title, table in (("own time", own), ("including callees", inclusive)):
        lines.append(f"\ntop {top} by {title}:")
        for name, count in table.most_common(top):
            lines.append(f"  {100 * count / max(1, total):5.1f} %  {name}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument(
        "--native", action="store_true", help="also sample C frames (the compiled build's code)"
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "profile.txt")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workdir = RESULTS / "profile-work"
    shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    calls = round(args.rate * args.seconds)
    with Lab(workdir) as lab:
        uases = lab.callees(2, lifetime_s=args.seconds + 60, max_calls=calls + 10_000)
        siplb = lab.balancer("siplb", [u.sip_uri for u in uases])
        uac = lab.caller(
            siplb.address, calls=calls, rate=args.rate, hold_ms=100, timeout_s=args.seconds + 30
        )
        time.sleep(1.0)  # sample the steady state, not the start
        cpu0 = cpu_seconds(siplb.pid)
        sampled = max(1, round(args.seconds - 2))
        spy = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(siplb.pid),
                "--duration",
                str(sampled),
                "--rate",
                "250",
                # C frames need siplb paused while sampled: it runs slower, in the same proportions
                *(["--native"] if args.native else ["--nonblocking"]),
                "--format",
                "raw",
                "--output",
                str(args.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = spy.communicate(timeout=sampled + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        cpu = cpu_seconds(siplb.pid) - cpu0
        result = uac.wait()
    if spy.returncode != 0:
        print(f"py-spy failed ({spy.returncode}): {err}", file=sys.stderr)
        return 1
    stats = result.stats
    print(
        f"siplb at {args.rate:g} calls/s: {stats.successful_calls} ok, {stats.failed_calls} "
        f"failed, {stats.retransmissions} retransmissions; {cpu:.2f} s CPU over the "
        f"~{sampled} s sampled ({1000 * cpu / (args.rate * sampled):.3f} ms a call)"
    )
    print(summarize(args.out, args.top))
    print(f"\ncollapsed stacks: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
