"""Everyone watching an instance sees every operation live, whoever or whatever started it: an
operator and a viewer with the page open while a script restarts the instance through the API."""

import httpx
import pytest

from tests.e2e.conftest import DEMO_WAIT_S, demo_ready, ensure_viewer, login, wait_idle

pytestmark = pytest.mark.browser


def api_key(console) -> str:
    """An API token of the demo operator, as a script would hold one."""
    result = console.manage(
        "shell",
        "-c",
        "from console.api.models import ApiToken; from django.contrib.auth import get_user_model as g; "
        f"print(ApiToken.issue(g().objects.get(username='{console.username}'), 'script')[1])",
    )
    return result.stdout.strip().splitlines()[-1]


def restart_by_script(console, reason: str) -> int:
    """The demo restarted through the API, as a script would; the operation's number."""
    response = httpx.post(
        console.url + "/api/instances/demo/operations/",
        json={"kind": "restart", "reason": reason},
        headers={"Authorization": f"Bearer {api_key(console)}"},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_an_operation_started_by_the_api_appears_on_every_open_page(browser, second_browser, embedded_console):
    console = embedded_console
    demo_ready(console)
    operator, viewer = browser.new_page(), second_browser.new_page()
    login(operator, console)
    login(viewer, console, *ensure_viewer(console))
    for page in (operator, viewer):
        page.goto(console.url + "/instances/demo/")
        wait_idle(page)
        page.wait_for_selector("[data-live-state].on", timeout=15_000)
    assert viewer.locator("form#operate").count() == 0

    number = restart_by_script(console, "from a script")

    for page in (operator, viewer):
        card = f"#operation-live #operation-{number}[data-state=succeeded]"
        page.wait_for_selector(card, timeout=DEMO_WAIT_S * 1000)
        steps = page.locator(f"{card} li.step strong").all_inner_texts()
        assert steps == ["handover", "ready", "verify"], steps
        row = page.locator("#operations tbody tr").filter(has=page.locator(f"a:text-is('{number}')"))
        row.filter(has_text="Succeeded").wait_for(timeout=15_000)
        assert "API" in row.inner_text() and "from a script" in row.inner_text()
    operator.close()
    viewer.close()


def test_a_hold_placed_on_one_page_shows_live_on_every_other(browser, second_browser, embedded_console):
    """An operator puts the demo on hold from its page: a viewer's dashboard marks it at once; a
    script ends the hold: the marker goes from both pages and the operator's card offers a hold again."""
    console = embedded_console
    key = api_key(console)
    operator, viewer = browser.new_page(), second_browser.new_page()
    login(operator, console)
    login(viewer, console, *ensure_viewer(console))
    operator.goto(console.url + "/instances/demo/")
    viewer.goto(console.url + "/")
    for page in (operator, viewer):
        wait_idle(page)
        page.wait_for_selector("[data-live-state].on", timeout=15_000)
    marker = viewer.locator('[data-instance="demo"] [data-field="hold"]')
    assert marker.is_hidden()
    try:
        operator.select_option("#hold-form select[name=minutes]", "30")
        operator.fill("#hold-form input[name=reason]", "driver upgrade")
        operator.click("#hold-form button[type=submit]")
        operator.wait_for_selector("#hold button:has-text('End hold')", timeout=10_000)
        marker.wait_for(state="visible", timeout=10_000)
        assert marker.inner_text() == "on hold" and marker.get_attribute("title").endswith(": driver upgrade")
        assert operator.locator('.titlebar [data-field="hold"]').is_visible()
    finally:
        ended = httpx.delete(console.url + "/api/instances/demo/hold/", headers={"Authorization": f"Bearer {key}"})
    assert ended.status_code == 200, ended.text
    marker.wait_for(state="hidden", timeout=10_000)
    operator.wait_for_selector("#hold-form", timeout=10_000)  # the card, fetched again on the event
    assert operator.locator('.titlebar [data-field="hold"]').is_hidden()

    # A hold whose time runs out while the page is open: no event comes, the page's own timer sees it.
    console.manage(
        "shell",
        "-c",
        "from datetime import timedelta; from django.utils import timezone; "
        "from console.instances.models import Hold, Instance; "
        "Hold.objects.update_or_create(instance=Instance.objects.get(name='demo'), defaults=dict("
        "until=timezone.now() + timedelta(seconds=12), reason='short', placed_by='x', placed=timezone.now()))",
    )
    operator.reload()
    mine = operator.locator('.titlebar [data-field="hold"]')
    mine.wait_for(state="visible", timeout=10_000)
    assert operator.locator("#hold button:has-text('End hold')").count() == 1
    mine.wait_for(state="hidden", timeout=20_000)
    operator.wait_for_selector("#hold-form", timeout=10_000)
    operator.close()
    viewer.close()


def test_a_hosts_hold_shows_live_on_every_page_of_that_host(browser, second_browser, embedded_console):
    """An operator holds every instance of the demo's host from the host's page: a viewer's page of the
    same host counts them and marks the demo's row at once; a script ends the holds: both go."""
    console = embedded_console
    key = api_key(console)
    operator, viewer = browser.new_page(), second_browser.new_page()
    login(operator, console)
    login(viewer, console, *ensure_viewer(console))
    auth = {"Authorization": f"Bearer {key}"}
    host = httpx.get(console.url + "/api/instances/demo/", headers=auth).json()["host"]
    for page in (operator, viewer):
        page.goto(console.url + f"/hosts/{host}/")
        wait_idle(page)
        page.wait_for_selector("[data-live-state].on", timeout=15_000)
    assert viewer.locator("#host-hold-form").count() == 0
    counted = viewer.locator("#host-hold .message")
    marker = viewer.locator('[data-instance="demo"] [data-field="hold"]')
    try:
        operator.fill("#host-hold-form input[name=reason]", "driver upgrade")
        operator.click("#host-hold-form button[type=submit]")
        operator.wait_for_selector("#host-hold button:has-text('End their holds')", timeout=10_000)
        counted.wait_for(state="visible", timeout=10_000)  # the viewer's card, fetched again on the event
        assert "instance" in counted.inner_text() and "on hold" in counted.inner_text()
        marker.wait_for(state="visible", timeout=10_000)
    finally:
        ended = httpx.delete(console.url + f"/api/hosts/{host}/hold/", headers=auth)
    assert ended.status_code == 200 and "demo" in ended.json()["ended"], ended.text
    counted.wait_for(state="detached", timeout=10_000)
    marker.wait_for(state="hidden", timeout=10_000)
    operator.close()
    viewer.close()


def test_a_restarts_page_shows_its_effect_once_it_ends(browser, embedded_console):
    """The page of a restart, open while it runs, shows what it changed as soon as it ends: the
    figures of the minutes before it against those after it, measured live."""
    console = embedded_console
    demo_ready(console)
    page = browser.new_page()
    login(page, console)
    number = restart_by_script(console, "did it help?")
    page.goto(console.url + f"/operations/{number}/")
    page.wait_for_selector(f"#operation-{number}[data-state=succeeded]", timeout=DEMO_WAIT_S * 1000)
    page.wait_for_selector("#effect h3", timeout=10_000)  # fetched on the operation's last event
    assert "measuring until" in page.inner_text("#effect h3")
    rows = page.locator("#effect tr[data-figure]")
    assert rows.count() >= 2, page.inner_html("#effect")
    fds = page.locator('#effect tr[data-figure="fds"] td').all_inner_texts()
    assert fds[0] == "open files" and fds[1].isdigit(), fds  # sampled before the restart
    page.close()
