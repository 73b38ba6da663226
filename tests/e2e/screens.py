"""The dashboard's screenshots in docs/: ``make screenshots`` (``python -m tests.e2e.screens DIR``).

It runs ``siplb demo`` (three demo PBXs, calls flowing, pbx2 stopping at 12 s), reads the
dashboard's address and token from what the demo prints, waits until pbx2 shows down, drains
pbx3 through the admin API, and takes the page with Debian's Chromium at 1600, 1400 and 820 px
wide: ``dashboard.png``, ``dashboard-1400.png`` and ``dashboard-820.png`` in DIR (default
docs). About 20 s; loopback only; the demo is stopped with SIGINT (by its PID) at the end.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from tests.test_demo import free_demo_port

from .balancer import admin_request
from .test_dashboard import CHROMIUM, CHROMIUM_ARGS

SHOTS = [
    ("dashboard.png", 1600, 940),
    ("dashboard-1400.png", 1400, 900),
    ("dashboard-820.png", 820, 1000),
]
ADDRESS = re.compile(r"dashboard and admin API on (\S+)/ +\(admin token (\S+)\)")
START_S = 15.0  # the demo prints the dashboard's address within this
DOWN_S = 25.0  # pbx2 stops at 12 s and is down about 1.5 s later


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "docs")
    out.mkdir(parents=True, exist_ok=True)
    port = free_demo_port()
    args = ["demo", "--no-table", "--port", str(port), "--admin-port", "0", "--duration", "90"]
    demo = subprocess.Popen(
        [sys.executable, "-m", "siplb", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert demo.stdout is not None
        url, token = _address(demo.stdout)
        _shoot(url, token, port, out)
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(15)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    for name, _, _ in SHOTS:
        print(out / name)
    return 0


def _address(stdout: IO[str]) -> tuple[str, str]:
    """The dashboard's URL and token, from the demo's first lines."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        line = stdout.readline()
        if not line:
            break
        found = ADDRESS.search(line)
        if found:
            return found.group(1), found.group(2)
    raise SystemExit("siplb demo printed no dashboard address")


def _shoot(url: str, token: str, port: int, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    pbx2, pbx3 = (f"sip:127.0.0.1:{port + 11}", f"sip:127.0.0.1:{port + 12}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            pages = [_open(chromium, url, token, width, height) for _, width, height in SHOTS]
            pages[0].wait_for_selector(
                f'tr.dest[data-uri="{pbx2}"][data-state="down"]', timeout=DOWN_S * 1000
            )
            path = f"/api/sets/demo-pbx/destinations/{quote(pbx3, safe='')}/drain"
            status, body = admin_request(url + path, "POST", token=token)
            assert status == 200, body
            for page in pages:
                page.wait_for_selector(f'tr.dest[data-uri="{pbx3}"][data-state="draining"]')
                page.wait_for_timeout(1500)  # one more push: the chart and the bars move
            for page, (name, _, _) in zip(pages, SHOTS, strict=True):
                page.screenshot(path=str(out / name), full_page=True)
        finally:
            chromium.close()


def _open(chromium: Any, url: str, token: str, width: int, height: int) -> Any:
    context = chromium.new_context(viewport={"width": width, "height": height})
    context.add_init_script(f"localStorage.setItem('siplb.admin.token', {token!r})")
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_selector("tr.dest", timeout=5000)
    return page


if __name__ == "__main__":
    sys.exit(main(sys.argv))
