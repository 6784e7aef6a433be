"""Debian's chromium, driven by Playwright (never `playwright install`)."""

import shutil
import tempfile

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def playwright_driver():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


def launch(playwright, **options):
    """A chromium with its own fresh profile (cookies, storage): one operator's browser."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=shutil.which("chromium") or "/usr/bin/chromium",
        args=CHROMIUM_ARGS,
        headless=True,
        viewport=options.pop("viewport", {"width": 1280, "height": 800}),
        **options,
    )
    return context, profile


@pytest.fixture(scope="session")
def browser(playwright_driver):
    context, profile = launch(playwright_driver)
    yield context
    context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def second_browser(playwright_driver):
    """Another operator's browser, separate from `browser`."""
    context, profile = launch(playwright_driver)
    yield context
    context.close()
    shutil.rmtree(profile, ignore_errors=True)


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
