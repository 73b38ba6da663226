"""The dashboard's layout and dialogs in a real browser (Playwright driving Debian's Chromium, as
in ``test_dashboard.py``) against a real ``siplb run`` whose destinations are SIPp callees and
one address nobody answers.

At 1400 and 820 px wide the page must not scroll sideways and every button of a destination
row must be whole inside the window and inside its set's card (the less important columns give
way instead). Enter in the weight dialog applies the weight and Escape leaves it; Enter in the
token dialog submits the token. A destination's ``attrs`` (when the API gives them) are shown
on its row. Screenshots at both widths are saved as test artefacts: in ``$SIPLB_ARTIFACTS``
when set, and in the test's work directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from .balancer import ADMIN_TOKEN, SiplbProcess, launch
from .conftest import SippLauncher
from .harness import LOOPBACK, free_port
from .sipp import sipp_binary
from .test_dashboard import browser  # noqa: F401 (the module's Chromium, a fixture)

pytestmark = pytest.mark.e2e

WIDTHS = [1400, 820]
HEIGHT = 900
SET = "pbx"
ATTRS = {"site": "paris-2", "rack": "r12"}  # given to the first destination

# Everything a row offers to click, and the page's own buttons.
BUTTONS = "tr.dest button, #token-button, #p-ban"

# What sticks out: [page scroll width, client width, [(what, left, right, its card's left,
# its card's right)] for each visible button].
MEASURE = """() => {
  const root = document.documentElement;
  const out = [];
  for (const b of document.querySelectorAll(arguments_selector)) {
    const r = b.getBoundingClientRect();
    if (r.width === 0) continue;
    const card = b.closest("section, header") || document.body;
    const c = card.getBoundingClientRect();
    const row = b.closest("tr");
    const what = (row ? row.dataset.uri + " " : "") + (b.dataset.action || b.id || b.className);
    out.push([what, r.left, r.right, c.left, c.right]);
  }
  return [root.scrollWidth, root.clientWidth, out];
}"""


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiplbProcess]:
    """Two SIPp callees (the first with ``attrs``) and an address nobody answers."""
    sipp_binary()
    workdir = tmp_path_factory.mktemp("layout")
    sipp = SippLauncher(workdir)
    try:
        uases = sipp.uases(2)
        silent = f"sip:{LOOPBACK}:{free_port()}"
        attrs = ", ".join(f'{key} = "{value}"' for key, value in ATTRS.items())
        dests = [f'{{ uri = "{uases[0].sip_uri}", attrs = {{ {attrs} }} }}']
        dests += [f'{{ uri = "{uases[1].sip_uri}", weight = 2 }}', f'{{ uri = "{silent}" }}']
        port, admin_port = free_port(), free_port()
        config = workdir / "siplb.toml"
        config.write_text(_config(port, admin_port, dests))
        proc = launch(workdir, config, (LOOPBACK, port), admin_port)
        try:
            yield proc
        finally:
            code = proc.stop()
            assert code == 0, f"siplb exited with {code} on SIGTERM\n{proc.log_tail()}"
    finally:
        sipp.stop_all()


def _config(port: int, admin_port: int, dests: list[str]) -> str:
    listed = ",\n".join(f"  {dest}" for dest in dests)
    return f"""[[listen]]
transport = "udp"
address = "{LOOPBACK}:{port}"

[[sets]]
name = "{SET}"
algorithm = "weighted"
destinations = [
{listed}
]

[health]
interval = 1.0
timeout = 0.5
down_after = 2
up_after = 2

[log]
format = "json"
level = "info"

[admin]
listen = "{LOOPBACK}:{admin_port}"
token = "{ADMIN_TOKEN}"
"""


def _page(chromium: Any, lb: SiplbProcess, width: int, *, token: bool = True) -> Any:
    context = chromium.new_context(viewport={"width": width, "height": HEIGHT})
    if token:
        context.add_init_script(f"localStorage.setItem('siplb.admin.token', {ADMIN_TOKEN!r})")
    page = context.new_page()
    page.goto(lb.admin_url + "/")
    return page


def _destinations(lb: SiplbProcess) -> list[dict[str, Any]]:
    status, body = lb.api("GET", "/api/sets")
    assert status == 200, body
    assert isinstance(body, dict)
    return [dest for entry in body["sets"] for dest in entry["destinations"]]


def _artefact(page: Any, workdir: Path, name: str) -> Path:
    path = workdir / name
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("SIPLB_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


@pytest.mark.parametrize("width", WIDTHS)
def test_no_sideways_scroll_and_every_button_in_view(
    browser: Any,  # noqa: F811 (the fixture imported above)
    lb: SiplbProcess,
    e2e_workdir: Path,
    width: int,
) -> None:
    page = _page(browser, lb, width)
    page.wait_for_selector('tr.dest[data-state="up"]', timeout=5000)
    page.wait_for_selector('tr.dest[data-state="down"]', timeout=5000)
    page.wait_for_selector("#p-refused-total:not(:empty)", timeout=5000)

    scroll_width, client_width, buttons = page.evaluate(
        MEASURE.replace("arguments_selector", repr(BUTTONS))
    )
    assert client_width == width
    assert scroll_width <= client_width, f"the page scrolls sideways: {scroll_width} px"
    rows = page.locator("tr.dest").count()
    assert rows == 3
    assert len(buttons) >= 3 * rows + 2, buttons  # weight + drain, enable, disable; the page's
    outside = [
        (what, round(left), round(right), round(card_left), round(card_right))
        for what, left, right, card_left, card_right in buttons
        if left < card_left or right > card_right or left < 0 or right > client_width
    ]
    assert not outside, f"buttons not whole in view at {width} px: {outside}"

    shown = page.locator("tr.dest").first.locator(".attr").all_inner_texts()
    first = _destinations(lb)[0]
    if "attrs" in first:  # the API gives attrs: every one is on the row
        assert sorted(shown) == sorted(f"{k}={v}" for k, v in first["attrs"].items())
    else:  # none given: nothing shown for them
        assert shown == []
    path = _artefact(page, e2e_workdir, f"dashboard-{width}.png")
    assert path.stat().st_size > 10_000
    page.context.close()


def test_enter_applies_the_weight_and_escape_leaves_it(
    browser: Any,  # noqa: F811 (the fixture imported above)
    lb: SiplbProcess,
) -> None:
    uri = _destinations(lb)[1]["uri"]
    page = _page(browser, lb, 1400)
    puts: list[str] = []
    page.on(
        "request", lambda request: puts.append(request.url) if request.method == "PUT" else None
    )
    weight = page.locator(f'tr.dest[data-uri="{uri}"] button.weight')
    weight.wait_for(timeout=5000)

    weight.click()
    page.wait_for_selector("dialog#ask[open]", timeout=2000)
    page.fill("#ask-input", "7")
    page.press("#ask-input", "Enter")
    page.wait_for_selector("dialog#ask:not([open])", state="attached", timeout=2000)
    page.wait_for_function(
        "document.querySelector('.toast') && document.querySelector('.toast').textContent"
        ".includes('weight 7')",
        timeout=3000,
    )
    assert _weight(lb, uri) == 7
    assert len(puts) == 1

    weight.click()
    page.wait_for_selector("dialog#ask[open]", timeout=2000)
    page.fill("#ask-input", "9")
    page.press("#ask-input", "Escape")
    page.wait_for_selector("dialog#ask:not([open])", state="attached", timeout=2000)
    page.evaluate("() => fetch('/api/status', {headers: authHeaders()})")  # a round trip
    assert len(puts) == 1, puts
    assert _weight(lb, uri) == 7
    page.context.close()


def _weight(lb: SiplbProcess, uri: str) -> int:
    status, view = lb.api("GET", f"/api/sets/{SET}/destinations/{quote(uri, safe='')}")
    assert status == 200, view
    assert isinstance(view, dict)
    return int(view["weight"])


def test_enter_submits_the_token_and_escape_cancels(
    browser: Any,  # noqa: F811 (the fixture imported above)
    lb: SiplbProcess,
) -> None:
    page = _page(browser, lb, 820, token=False)
    page.wait_for_selector("dialog#ask[open]", timeout=5000)  # the stream answered 401
    page.press("#ask-input", "Escape")
    page.wait_for_selector("dialog#ask:not([open])", state="attached", timeout=2000)
    assert page.locator("#conn").inner_text() == "token needed"
    assert page.evaluate("localStorage.getItem('siplb.admin.token')") is None

    page.click("#token-button")
    page.wait_for_selector("dialog#ask[open]", timeout=2000)
    page.fill("#ask-input", ADMIN_TOKEN)
    page.press("#ask-input", "Enter")
    page.wait_for_selector("tr.dest", timeout=5000)
    assert page.locator("#conn").inner_text() == "live"
    assert page.evaluate("localStorage.getItem('siplb.admin.token')") == ADMIN_TOKEN
    page.context.close()
