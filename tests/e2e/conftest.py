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
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 800},
        )
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def login(page, console) -> None:
    page.goto(console.url + "/")
    page.fill("input[name=username]", console.username)
    page.fill("input[name=password]", console.password)
    page.click("button[type=submit]")
    page.wait_for_url(console.url + "/")
