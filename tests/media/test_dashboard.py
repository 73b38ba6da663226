"""The dashboard's media panel in a real browser (Playwright driving Debian's Chromium) against a
real ``siplb run`` with a real rtpengine: the engine's row shows it up, then down once killed;
without ``[media]`` the panel stays hidden."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.balancer import ADMIN_TOKEN, SiplbProcess, start_siplb
from e2e.test_dashboard import browser  # noqa: F401 (the module's Chromium fixture)

from .engine import running_engine

SILENT = "sip:127.0.0.1:9"  # the set needs a destination; no call is made


@pytest.fixture
def balancers() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        assert proc.stop() == 0, proc.log_tail()


def open_page(browser: Any, lb: SiplbProcess) -> Any:  # noqa: F811 (the fixture's name)
    assert lb.admin_url is not None
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(f"localStorage.setItem('siplb.admin.token', {ADMIN_TOKEN!r})")
    page = context.new_page()
    page.goto(lb.admin_url + "/")
    return page


def test_the_media_panel_shows_an_engine_up_then_down(
    browser: Any,  # noqa: F811
    balancers: list[SiplbProcess],
    tmp_path: Path,
) -> None:
    with running_engine(tmp_path / "engine") as engine:
        media = f'\n[media]\nengines = ["{engine.address}"]\ntimeout = 0.3\nping_interval = 0.3\n'
        lb = start_siplb(tmp_path, [SILENT], extra=media)
        balancers.append(lb)
        page = open_page(browser, lb)
        row = page.locator("#media #m-rows tr")
        page.wait_for_function(
            "() => { const r = document.querySelector('#media #m-rows tr');"
            " return r && r.children[1].textContent === 'up'; }",
            timeout=5000,
        )
        assert page.locator("#media").is_visible()
        assert row.count() == 1
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == engine.address
        assert page.locator("#m-up").inner_text() == "1 / 1"
        engine.kill()
        page.wait_for_function(
            "() => document.querySelector('#media #m-rows tr').children[1].textContent === 'down'",
            timeout=5000,
        )
        assert page.locator("#m-up").inner_text() == "0 / 1"
        assert int(row.locator("td").nth(7).inner_text()) >= 1  # the pings that failed
        page.context.close()


def test_without_media_the_panel_stays_hidden(
    browser: Any,  # noqa: F811
    balancers: list[SiplbProcess],
    tmp_path: Path,
) -> None:
    lb = start_siplb(tmp_path, [SILENT])
    balancers.append(lb)
    page = open_page(browser, lb)
    page.wait_for_selector("tr.dest", timeout=5000)  # the page has read the balancer
    # media.js read /api/status, found no media object, and stopped asking
    page.wait_for_function("() => mediaPanel.off === true", timeout=5000)
    assert page.locator("#media").is_hidden()
    assert page.locator("#media #m-rows").count() == 0
    page.context.close()
