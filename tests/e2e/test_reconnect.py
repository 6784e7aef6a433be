"""The live panels resume by themselves after the console goes away and comes back (a deploy, a
crash, a restart of the console's own server): no reload, the same page, events again."""

import pytest

from tests.conftest import EmbeddedConsole
from tests.e2e.conftest import demo_ready, login

pytestmark = pytest.mark.browser


@pytest.fixture
def own_console(tmp_path):
    """A console of this test's own: it is stopped and started again mid-test."""
    console = EmbeddedConsole(tmp_path / "var")
    console.start()
    yield console
    console.stop()


def test_live_page_reconnects_after_the_console_restarts(second_browser, own_console):
    console = own_console
    demo_ready(console)
    page = second_browser.new_page()
    login(page, console)
    page.goto(console.url + "/instances/demo/")
    page.wait_for_selector("[data-live-state].on", timeout=15_000)
    page.evaluate(
        "window.pageId = Math.random(); window.samples = 0;"
        "document.addEventListener('console:event', (e) => { if (e.detail.type === 'sample') window.samples++; });"
    )
    page_id = page.evaluate("window.pageId")

    assert console.stop() == 0
    page.wait_for_selector("[data-live-state].off", timeout=15_000)
    assert "reconnecting" in page.inner_text("[data-live-state]")

    console.start()  # same port, same database and secret: the browser's session is still good
    page.wait_for_selector("[data-live-state].on", timeout=30_000)
    page.evaluate("window.samples = 0")
    page.wait_for_function("window.samples > 0", timeout=30_000)
    assert page.evaluate("window.pageId") == page_id  # the same page: nothing reloaded it
