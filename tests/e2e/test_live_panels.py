"""Live panels in a real browser: figures, charts and logs update without reload; a second
operator's dashboard follows a restart."""

import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import DEMO_WAIT_S, demo_ready, login, wait_idle
from tests.inference.helpers import chat

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = pytest.mark.browser


def test_instance_page_updates_live_and_a_second_dashboard_follows_a_restart(browser, second_browser, embedded_console):
    console = embedded_console
    demo_ready(console)
    page = browser.new_page()
    login(page, console)
    page.goto(console.url + "/instances/demo/")
    wait_idle(page)
    page.wait_for_selector("[data-live-state].on", timeout=15_000)
    page.wait_for_selector(".titlebar [data-field=status].ready", timeout=30_000)

    # Figures and charts move without a reload.
    page.wait_for_function("Number(document.getElementById('charts').dataset.points || 0) > 0", timeout=30_000)
    points = int(page.get_attribute("#charts", "data-points"))
    page.wait_for_function(f"Number(document.getElementById('charts').dataset.points) > {points}", timeout=15_000)
    assert page.locator("[data-chart=memory] canvas").count() == 1
    assert "ms" in page.inner_text("[data-field=probe_ms]")
    # The demo keeps a standby model process loaded (HANDOVER_STANDBY): the page says so, live.
    page.wait_for_function(
        "document.querySelector('[data-field=standby]').textContent.startsWith('ready, loaded in')", timeout=60_000
    )

    # A request to the instance shows up in the log panel.
    request_id = uuid.uuid4().hex
    response = httpx.post(console.demo_url + "/v1/chat/completions", json=chat(), headers={"X-Request-Id": request_id})
    assert response.status_code == 200
    page.wait_for_selector(f"#log-lines .line:has-text('{request_id}')", timeout=15_000)
    # Our server logs JSON: shown as columns, the request id in its own, the JSON itself on "raw".
    line = page.locator("#log-lines .line.structured", has=page.locator(f".rid:text-is('{request_id}')")).last
    assert line.locator(".lv").inner_text() == "INFO" and line.locator(".m").inner_text() == "request"
    assert "status=200" in line.locator(".kv").inner_text()
    page.check("[data-log=raw]")
    page.wait_for_selector(f'#log-lines .line:has-text(\'"request_id": "{request_id}"\')')
    assert page.locator("#log-lines .line.structured").count() == 0
    page.uncheck("[data-log=raw]")
    # A catastrophic pattern is refused rather than freezing the page.
    page.check("[data-log=regex]")
    page.fill("[data-log=filter]", "(a+)+$")
    page.wait_for_function("document.querySelector('[data-log=status]').textContent.includes('too slow')")
    page.fill("[data-log=filter]", request_id[:8])
    page.wait_for_function(
        "document.querySelectorAll('#log-lines .line').length === 1 &&"
        " document.querySelector('[data-log=status]').textContent === ''"
    )
    page.uncheck("[data-log=regex]")
    page.fill("[data-log=filter]", "")

    page.click("#diagnose-section button")
    verdict = page.wait_for_selector("#diagnose [data-verdict]")
    assert verdict.get_attribute("data-verdict") == "healthy", verdict.inner_text()

    # Another operator watches the dashboard while this one restarts.
    other = second_browser.new_page()
    login(other, console)
    badge = other.locator("#instance-demo [data-field=status]")
    other.wait_for_selector("#instance-demo [data-field=status].ready", timeout=30_000)
    other.wait_for_selector("[data-live-state].on", timeout=15_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    other.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
    # The summary counts instances by state; a state clicked shows only its rows, clicked again all.
    ready_chip = other.locator("#status-summary .chip.ready")
    assert ready_chip.inner_text().endswith(" ready") and int(ready_chip.inner_text().split()[0]) >= 1
    ready_chip.click()
    shown = "[...document.querySelectorAll('#instances tbody tr')].filter(r => !r.hidden)"
    assert set(other.evaluate(shown + ".map(r => r.querySelector('[data-field=status]').className)")) == {"badge ready"}
    ready_chip.click()
    assert other.evaluate(shown + ".length") == other.locator("#instances tbody tr").count()

    page.select_option("select[name=kind]", "restart")
    page.fill("input[name=reason]", "p95 creeping up")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form#operate button[type=submit]")
    other.wait_for_selector("#instance-demo [data-field=status].restarting", timeout=15_000)
    other.wait_for_selector("#status-summary .chip.restarting", timeout=5_000)
    page.wait_for_selector("#operation-live .progress[data-state=succeeded]", timeout=DEMO_WAIT_S * 1000)
    other.wait_for_selector("#instance-demo [data-field=status].ready", timeout=30_000)
    assert "Succeeded" in other.inner_text("#instance-demo [data-field=operation]")
    assert badge.inner_text() == "ready"
    page.screenshot(path=str(SCREENSHOTS / "instance.png"), full_page=True)
    page.close()
    other.close()


def test_dashboard_fits_a_phone(second_browser, embedded_console):
    console = embedded_console
    page = second_browser.new_page()
    page.set_viewport_size({"width": 390, "height": 800})
    login(page, console)
    page.wait_for_selector("#instance-demo [data-field=status]")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
    page.close()


# Every socket the page opens, kept where the test can reach it.
KEEP_SOCKETS = """
window.sockets = [];
const RealSocket = window.WebSocket;
window.WebSocket = class extends RealSocket {
  constructor(...args) { super(...args); window.sockets.push(this); }
};
"""
# A burst of 200 samples of the demo in one task, the console's own events held back meanwhile:
# the page writes the row once, in the next frame, with the last of them.
BURST = """() => new Promise((resolve) => {
  const ws = window.sockets[0], handle = ws.onmessage, rendered = [];
  ws.onmessage = () => {};
  document.addEventListener('console:rendered', (e) => rendered.push(e.detail.map((d) => d.in_flight)));
  const at = Date.now() / 1000;
  for (let i = 1; i <= 200; i++) {
    const sample = { instance: 'demo', data: { status: 'ready', in_flight: 1000 + i, at: at, age: 0 } };
    handle({ data: JSON.stringify({ type: 'samples', data: { samples: [sample] } }) });
  }
  const written = document.querySelector('#instance-demo [data-field=in_flight]').textContent;
  requestAnimationFrame(() => requestAnimationFrame(() => resolve({
    before: written, rendered: rendered,
    after: document.querySelector('#instance-demo [data-field=in_flight]').textContent,
  })));
})"""


def test_the_dashboard_writes_a_burst_of_samples_once_a_frame(second_browser, embedded_console):
    console = embedded_console
    page = second_browser.new_page()
    page.add_init_script(KEEP_SOCKETS)
    login(page, console)
    page.wait_for_selector("[data-live-state].on", timeout=15_000)
    result = page.evaluate(BURST)
    assert result["before"] != "1200", "written before the frame"
    assert result["rendered"] == [[1200]], result["rendered"]
    assert result["after"] == "1200"
    page.close()
