"""The dashboard in a real browser: Playwright driving Debian's Chromium (headless) against a
real ``siplb run`` with SIPp callees and a SIPp caller, all on loopback.

The page must list every destination, turn a killed callee's row down within the detection
time (plus the one-second push), and its drain button must drain a destination (asking for the
token) so that the next calls avoid it. A screenshot is saved as a test artefact: in
``$SIPLB_ARTIFACTS`` when set, else in the test's work directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .balancer import ADMIN_TOKEN, SiplbProcess, start_siplb
from .conftest import SippLauncher
from .harness import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# Headless, no GPU, and nothing that reaches beyond loopback (updates, metrics, sync, ...).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-pings",
    "--metrics-recording-only",
]
INTERVAL, TIMEOUT, DOWN_AFTER = 1.0, 0.5, 2
DETECTION_S = INTERVAL * DOWN_AFTER + TIMEOUT
PUSH_S = 1.0  # the dashboard is updated once a second
SLACK_S = 0.8


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: `make test` installs it")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def balancers() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        code = proc.stop()
        assert code == 0, f"siplb exited with {code} on SIGTERM\n{proc.log_tail()}"


def _page(browser: Any, lb: SiplbProcess, *, token: str | None) -> Any:
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    if token is not None:
        context.add_init_script(f"localStorage.setItem('siplb.admin.token', {token!r})")
    page = context.new_page()
    page.goto(lb.admin_url + "/")
    return page


def _row(page: Any, uri: str) -> Any:
    return page.locator(f'tr.dest[data-uri="{uri}"]')


def _wait_state(page: Any, uri: str, state: str, timeout_s: float) -> float:
    """Seconds until the row of ``uri`` shows ``state``; fails after ``timeout_s``."""
    started = time.monotonic()
    page.wait_for_selector(
        f'tr.dest[data-uri="{uri}"][data-state="{state}"]', timeout=timeout_s * 1000
    )
    return time.monotonic() - started


def _artefact(page: Any, workdir: Path, name: str) -> Path:
    path = workdir / name
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("SIPLB_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


def test_page_lists_destinations_and_a_killed_uas_turns_down(
    browser: Any, sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(3)
    lb = start_siplb(e2e_workdir, [u.sip_uri for u in uases])
    balancers.append(lb)
    uac = sipp.uac(lb.address, calls=200, rate=10, duration_ms=1500, timeout_s=40)
    page = _page(browser, lb, token=ADMIN_TOKEN)

    page.wait_for_selector("tr.dest", timeout=5000)
    shown = page.locator("tr.dest").evaluate_all("rows => rows.map(r => r.dataset.uri)")
    assert shown == [u.sip_uri for u in uases]
    for uas in uases:
        _wait_state(page, uas.sip_uri, "up", 3.0)
    assert page.locator("#conn").inner_text() == "live"

    time.sleep(3.0)  # calls flowing: the bars and the chart have something to show
    assert int(page.locator("#t-calls").inner_text()) > 0
    victim = uases[1]
    victim.process.signal(signal.SIGKILL)
    waited = _wait_state(page, victim.sip_uri, "down", DETECTION_S + PUSH_S + SLACK_S + 2.0)
    assert waited <= DETECTION_S + PUSH_S + SLACK_S, f"row turned down after {waited:.2f} s"
    assert page.locator("#t-down").inner_text() == "1"
    log = page.locator("#events li.k-state").all_inner_texts()
    assert any(victim.sip_uri in line and "down" in line for line in log), log
    for uas in (uases[0], uases[2]):
        assert _row(page, uas.sip_uri).get_attribute("data-state") == "up"

    time.sleep(1.5)
    path = _artefact(page, e2e_workdir, "dashboard.png")
    assert path.stat().st_size > 10_000
    uac.stop()
    page.context.close()


def test_page_asks_for_the_token_and_never_puts_it_in_a_url(
    browser: Any, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    lb = start_siplb(e2e_workdir, [f"sip:127.0.0.1:{free_port()}"])
    balancers.append(lb)
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(lb.admin_url + "/")
    page.wait_for_selector("dialog#ask[open]", timeout=5000)  # the stream answered 401
    assert page.locator("#conn").inner_text() == "token needed"
    page.fill("#ask-input", ADMIN_TOKEN)
    page.click("#ask-ok")
    page.wait_for_selector("tr.dest", timeout=5000)
    assert page.locator("#conn").inner_text() == "live"
    assert any(url.endswith("/api/stream") for url in urls), urls
    assert not [url for url in urls if "token" in url or ADMIN_TOKEN in url]
    context.close()


def test_drain_button_asks_for_the_token_and_new_calls_avoid_the_destination(
    browser: Any, sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    drained, other = sipp.uases(2)
    lb = start_siplb(e2e_workdir, [drained.sip_uri, other.sip_uri])
    balancers.append(lb)
    page = _page(browser, lb, token=ADMIN_TOKEN)
    _wait_state(page, drained.sip_uri, "up", 5.0)

    # calls in progress on both, then the operator drains one (the page asks for the token)
    first = sipp.uac(lb.address, calls=12, rate=12, duration_ms=2500, timeout_s=30)
    time.sleep(1.2)
    page.evaluate("localStorage.removeItem('siplb.admin.token')")
    _row(page, drained.sip_uri).locator('button[data-action="drain"]').click()
    page.wait_for_selector("dialog#ask[open]", timeout=2000)
    page.fill("#ask-input", ADMIN_TOKEN)
    page.click("#ask-ok")
    _wait_state(page, drained.sip_uri, "draining", 3.0)
    status, view = lb.api("GET", _dest_path(drained.sip_uri))
    assert status == 200
    assert view["admin"] == "draining"  # type: ignore[index]
    assert view["active_calls"] > 0  # type: ignore[index]

    result = first.wait(30)
    assert result.stats.successful_calls == 12, result.describe()
    _wait_state(page, drained.sip_uri, "drained", 3.0)  # its last call ended
    before = _calls_total(lb, drained.sip_uri), _calls_total(lb, other.sip_uri)

    second = sipp.run_uac(lb.address, calls=40, rate=20, duration_ms=100, timeout_s=30)
    assert second.stats.successful_calls == 40, second.describe()
    assert second.stats.failed_calls == 0, second.describe()
    after = _calls_total(lb, drained.sip_uri), _calls_total(lb, other.sip_uri)
    assert after[0] == before[0], "a drained destination took new calls"
    assert after[1] == before[1] + 40

    _row(page, drained.sip_uri).locator('button[data-action="enable"]').click()
    _wait_state(page, drained.sip_uri, "up", 3.0)
    page.context.close()


def _dest_path(uri: str) -> str:
    from urllib.parse import quote

    return f"/api/sets/pbx/destinations/{quote(uri, safe='')}"


def _calls_total(lb: SiplbProcess, uri: str) -> int:
    status, view = lb.api("GET", _dest_path(uri))
    assert status == 200, view
    return int(view["calls_total"])  # type: ignore[index]


@pytest.mark.parametrize("count", [1, 200])
def test_page_works_with_one_and_with_200_destinations(
    browser: Any, e2e_workdir: Path, balancers: list[SiplbProcess], count: int
) -> None:
    uris = [f"sip:127.0.0.1:{free_port()}" for _ in range(count)]  # nobody answers there
    lb = start_siplb(e2e_workdir, uris)
    balancers.append(lb)
    page = _page(browser, lb, token=ADMIN_TOKEN)
    page.wait_for_selector("tr.dest", timeout=5000)
    assert page.locator("tr.dest").count() == count
    page.wait_for_function(
        f"document.querySelectorAll('tr.dest[data-state=\"down\"]').length === {count}",
        timeout=(DETECTION_S + PUSH_S + SLACK_S + 2.0) * 1000,
    )
    assert page.locator("#t-down").inner_text() == str(count)
    assert page.locator("#t-up").inner_text() == f"0 / {count}"
    page.fill("#filter", uris[-1])
    assert page.locator("tr.dest:not(.hidden)").count() == 1
    page.context.close()
