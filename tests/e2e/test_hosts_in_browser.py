"""A host whose worker falls silent, as a browser sees it: without a reload, its card turns offline
and its instances' badges to "no data" once their last report is older than a sample counts."""

import pytest

from tests.e2e.conftest import login

pytestmark = pytest.mark.browser

# A host with no worker in the embedded console (it consumes host.local only), reported 18 s ago,
# with an instance last seen ready then: fresh for 12 s more (TELEMETRY_SAMPLE_SECONDS=1: 30 s).
SILENT = """
from datetime import timedelta
from django.utils import timezone
from console.instances.models import Host, Instance
from console.telemetry.models import Sample
then = timezone.now() - timedelta(seconds=18)
host = Host.objects.create(name="silent", seen_at=then)
instance = Instance.objects.create(name="silent-1", host=host, runtime="process", command=["true"],
                                   base_url="http://127.0.0.1:9")
Sample.objects.create(instance=instance, at=then, status="ready", probe_ok=True)
"""
FORGET = """
from console.instances.models import Host, Instance
Instance.objects.filter(host__name="silent").delete()
Host.objects.filter(name="silent").delete()
"""


def test_a_silent_host_goes_offline_and_its_instances_to_no_data(browser, embedded_console):
    console = embedded_console
    console.manage("shell", "-c", SILENT)
    try:
        page = browser.new_page()
        login(page, console)
        page.goto(console.url + "/")
        row, card = "#instance-silent-1", "[data-host-card=silent]"
        assert "ready" in page.get_attribute(f"{row} [data-field=status]", "class")
        assert page.inner_text(f"{card} [data-field=host-state]") == "online"
        page.wait_for_selector(f"{row} [data-field=status].unknown", timeout=20_000)
        page.wait_for_selector(f"{card} [data-field=host-state].down", timeout=10_000)
        assert page.inner_text(f"{card} [data-field=host-state]") == "offline"
        # The demo's host keeps reporting: online, its instance still live.
        assert page.inner_text("[data-host-card=local] [data-field=host-state]") == "online"
        assert "unknown" not in page.get_attribute("#instance-demo [data-field=status]", "class")

        page.click(f"{card} a")
        page.wait_for_selector("h1:has-text('silent')")
        assert "Its worker is not reporting" in page.inner_text("main")
        page.close()
    finally:
        console.manage("shell", "-c", FORGET)
