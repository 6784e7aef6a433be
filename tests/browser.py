"""Debian's chromium, driven by Playwright (never `playwright install`): the browser fixtures of
every test that uses one (tests/e2e, tests/engines)."""

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
