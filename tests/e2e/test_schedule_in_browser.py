"""An operator sets "every night at 03:00 Asia/Shanghai, rolling, group gpu-a" in the browser,
sees the next runs while typing, and a typo is a form error."""

import pytest

from tests.e2e.conftest import login

pytestmark = pytest.mark.browser


def test_nightly_rolling_schedule_for_a_group(browser, embedded_console):
    console = embedded_console
    console.manage(
        "shell",
        "-c",
        "from console.instances.models import Host, Instance; "
        "Instance.objects.get_or_create(name='gpu-a-1', defaults=dict(host=Host.objects.get(name='local'), "
        "group='gpu-a', command=['true'], base_url='http://127.0.0.1:9', enabled=False))",
    )
    page = browser.new_page()
    login(page, console)
    page.click("nav >> text=Schedules")
    page.click("text=New schedule")
    # Each control within its own column, each instance's checkbox beside its name (not above it).
    spilled = page.evaluate(
        """() => [...document.querySelectorAll('#schedule-form .field')].flatMap(field => {
            const column = field.getBoundingClientRect();
            return [...field.querySelectorAll('input, select')].filter(control => {
                const box = control.getBoundingClientRect();
                return box.left < column.left - 1 || box.right > column.right + 1;
            }).map(control => control.name);
        })"""
    )
    assert spilled == [], spilled
    choice = page.locator("#id_instances label").first
    check, label = choice.locator("input").bounding_box(), choice.bounding_box()
    assert abs(check["y"] + check["height"] / 2 - (label["y"] + label["height"] / 2)) < 3, (check, label)
    page.fill("input[name=name]", "nightly gpu-a")
    page.fill("input[name=cron]", "0 3 * * 9")  # a typo first
    page.fill("input[name=timezone]", "Asia/Shanghai")
    page.wait_for_selector("#preview [role=alert]:has-text('day of week')")
    page.fill("input[name=cron]", "daily at 03:00")
    page.wait_for_selector("#preview ol.runs li")
    runs = page.locator("#preview ol.runs li").all_inner_texts()
    assert len(runs) == 5 and all("03:00 CST" in r and "19:00 UTC" in r for r in runs), runs
    page.select_option("select[name=group]", "gpu-a")
    page.select_option("select[name=strategy]", "rolling")
    page.click("#schedule-form button[type=submit]")
    row = page.wait_for_selector("#schedules tr:has-text('nightly gpu-a')")
    text = row.inner_text()
    assert "0 3 * * *" in text and "Asia/Shanghai" in text and "group gpu-a" in text and "(19:00 UTC)" in text
    page.close()
