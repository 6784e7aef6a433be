"""An operator logs in, opens the demo instance, clicks Restart and watches every step."""

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import DEMO_WAIT_S, demo_ready, ensure_viewer, login, wait_idle

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = pytest.mark.browser


def test_restart_from_the_instance_page_shows_each_step(browser, embedded_console):
    console = embedded_console
    demo_ready(console)
    old_pid = httpx.get(console.demo_url + "/health").json()["pid"]
    page = browser.new_page()
    login(page, console)
    page.click("text=Demo (smoke model, CPU)")
    page.wait_for_selector("form#operate")
    # make run's own start of the demo may still be finishing
    wait_idle(page)
    page.select_option("select[name=kind]", "restart")
    page.fill("input[name=reason]", "nightly slowness")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form#operate button[type=submit]")
    progress = page.locator("#operation-live .progress")
    progress.wait_for()
    page.wait_for_selector("#operation-live .progress[data-state=succeeded]", timeout=DEMO_WAIT_S * 1000)
    steps = page.locator("#operation-live li.step").all_inner_texts()
    # The demo runs under inference.supervisor: a new model process takes over, then the old one goes.
    assert [s.split(" done")[0].strip() for s in steps] == ["handover", "ready", "verify"], steps
    assert all(" done " in f" {s} " for s in steps)
    assert "serving at" in steps[0] and "gone at" in steps[0]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "restart.png"), full_page=True)
    assert httpx.get(console.demo_url + "/health").json()["pid"] != old_pid
    # The history lists it with who asked and why.
    page.reload()
    row = page.locator("#operations tbody tr").first.inner_text()
    assert "Restart" in row and "operator" in row and "Succeeded" in row
    page.close()


def test_a_viewer_sees_no_operate_controls_and_is_refused(browser, embedded_console):
    console = embedded_console
    context_page = browser.new_page()
    login(context_page, console, *ensure_viewer(console))
    context_page.goto(console.url + "/instances/demo/")
    assert context_page.locator("form#operate").count() == 0
    context_page.close()
    browser.clear_cookies()


def test_a_refused_operation_says_why_in_the_page(browser, embedded_console):
    console = embedded_console
    page = browser.new_page()
    login(page, console)
    page.goto(console.url + "/instances/demo/")
    wait_idle(page)
    page.select_option("select[name=kind]", "restart")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("form#operate button[type=submit]")
    page.wait_for_selector("#operation-live .progress")
    page.select_option("select[name=kind]", "stop")  # while the restart runs
    page.click("form#operate button[type=submit]")
    alert = page.wait_for_selector("#operate-message [role=alert]")
    assert "wait for it to finish" in alert.inner_text()
    assert page.locator("#operation-live .progress").count() == 1  # the running restart stays in view
    page.goto(console.url + "/instances/demo/")
    wait_idle(page)
    page.close()
