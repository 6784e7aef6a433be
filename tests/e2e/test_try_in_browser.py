"""An operator tries the demo from its page: the answer streams in, with its first-token time, and
its request id leads to its line in the log panel."""

from pathlib import Path

import pytest

from tests.e2e.conftest import demo_ready, login

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_try_it_streams_an_answer_and_its_request_shows_in_the_log(browser, embedded_console):
    console = embedded_console
    demo_ready(console)
    page = browser.new_page()
    login(page, console)
    page.goto(console.url + "/instances/demo/")
    page.wait_for_selector("[data-live-state].on", timeout=15_000)
    page.wait_for_selector(".titlebar [data-field=status].ready", timeout=30_000)
    page.fill("#try textarea[name=prompt]", "Say something about GPUs.")
    page.fill("#try input[name=max_tokens]", "24")
    page.click("#try button[type=submit]")
    card = page.wait_for_selector("[data-trial][data-state=done]", timeout=60_000)
    trial = card.get_attribute("data-trial")
    assert trial.startswith("try-")
    assert page.inner_text(f"[data-trial='{trial}'] [data-field=trial-ttft]").endswith("ms")
    assert page.inner_text(f"[data-trial='{trial}'] [data-field=trial-request]") == trial
    page.wait_for_selector(f"#log-lines .line.structured .rid:text-is('{trial}')", timeout=15_000)
    page.locator("#try").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "try.png"))
    page.close()
