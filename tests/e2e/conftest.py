"""Helpers of the browser tests; the browser fixtures themselves are in tests/browser.py."""


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
