"""The console in Simplified Chinese, rendered for real: a restart's steps and details, the charts'
titles and legends, Diagnose and the badges in Chinese, drawn with a CJK font (no tofu)."""

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import DEMO_WAIT_S, demo_ready, login, wait_idle

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def fonts_of(page, selector: str) -> list[dict]:
    """The fonts chromium's own text layout used for the element's text (CSS.getPlatformFontsForNode)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    return cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]


def test_a_restart_and_the_charts_read_in_chinese(second_browser, embedded_console):
    console = embedded_console
    demo_ready(console)
    page = second_browser.new_page()
    login(page, console)
    page.goto(console.url + "/")
    with page.expect_navigation():  # the language form submits itself
        page.select_option("header select[name=language]", "zh-hans")
    try:
        page.goto(console.url + "/instances/demo/")
        wait_idle(page)
        page.wait_for_selector(".titlebar [data-field=status].ready", timeout=30_000)
        assert page.inner_text(".titlebar [data-field=status]") == "就绪"
        assert page.inner_text("#charts figcaption >> nth=0").startswith("显存")
        page.wait_for_function("document.querySelector('[data-chart=memory] .u-legend')", timeout=15_000)
        assert "已用" in page.inner_text("[data-chart=memory] .u-legend")

        page.select_option("select[name=kind]", "restart")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("form#operate button[type=submit]")
        page.wait_for_selector("#operation-live .progress[data-state=succeeded]", timeout=DEMO_WAIT_S * 1000)
        steps = page.locator("#operation-live li.step strong").all_inner_texts()
        assert steps == ["交接", "就绪", "验证"], steps  # the demo's restarts are handovers
        details = page.inner_text("#operation-live ol.steps")
        assert "新进程" in details and "旧进程" in details and "秒后就绪" in details

        page.click("#diagnose-section button")
        page.wait_for_selector("#diagnose [data-verdict]")
        assert len(re.findall(r"[\u4e00-\u9fff]", page.inner_text("#diagnose"))) > 20  # the findings in Chinese

        # Drawn with a CJK font: chromium's layout names the fonts it used for the step's name.
        fonts = fonts_of(page, "#operation-live li.step strong")
        assert any("CJK" in f["familyName"] and f["glyphCount"] >= 2 for f in fonts), fonts
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "instance-zh.png"), full_page=True)
    finally:
        page.goto(console.url + "/")
        with page.expect_navigation():
            page.select_option("header select[name=language]", "en")
        page.close()
