"""Helpers of the browser tests; the browser fixtures themselves are in tests/browser.py."""

from tests.conftest import wait_http

# How long the demo instance may take to be ready or to finish an operation: seconds on an idle
# machine, but its model process's cold start has taken over 90 s on 2 cores with the other lane's
# tests beside it. A guard against a hang, not a speed target (those are in bench/).
DEMO_WAIT_S = 180
# No operation of the page's instance running or queued.
IDLE = "!document.querySelector('#operation-live [data-state=running], #operation-live [data-state=queued]')"


def demo_ready(console) -> None:
    """The console's demo instance answers ready (make run's own start of it may still be going)."""
    wait_http(console.demo_url + "/health/ready", timeout=DEMO_WAIT_S)


def wait_idle(page) -> None:
    """The page's instance has no operation running or queued."""
    page.wait_for_function(IDLE, timeout=DEMO_WAIT_S * 1000)


def login(page, console, username: str | None = None, password: str | None = None) -> None:
    """Sign in as the demo operator, or as the given account."""
    page.context.clear_cookies()  # whoever was signed in before in this browser
    page.goto(console.url + "/")
    page.fill("input[name=username]", username or console.username)
    page.fill("input[name=password]", password or console.password)
    page.click("button[type=submit]")
    page.wait_for_url(console.url + "/")


def ensure_viewer(console, username: str = "viewer1", password: str = "viewer-pass-123") -> tuple[str, str]:
    """A viewer account on the console (created once)."""
    console.manage(
        "shell",
        "-c",
        "from tests.factories import user; from django.contrib.auth import get_user_model as g; "
        f"g().objects.filter(username='{username}').exists() or user('{username}', 'viewer', '{password}')",
    )
    return username, password
