"""`make run` on a machine with no Redis, PostgreSQL, Docker or GPU gives a working console."""

import re
import signal
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT, EmbeddedConsole, wait_http


def login(client: httpx.Client, console) -> None:
    page = client.get(console.url + "/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = client.post(
        console.url + "/accounts/login/",
        data={"username": console.username, "password": console.password, "csrfmiddlewaretoken": token},
        headers={"Referer": console.url + "/accounts/login/"},
    )
    assert response.status_code == 302, response.text[:500]


def test_login_page_then_instance_list_with_the_running_demo(embedded_console):
    console = embedded_console
    assert "created demo operator" in console.bootstrap_output
    with httpx.Client() as client:
        assert client.get(console.url + "/").status_code == 302  # login required
        login(client, console)
        page = client.get(console.url + "/")
        assert page.status_code == 200
        assert "Demo (smoke model, CPU)" in page.text
        assert client.get(console.url + "/static/vendor/htmx/htmx.min.js").status_code == 200
    # The in-process worker started the demo instance.
    wait_http(console.demo_url + "/health/ready", timeout=90)


def test_bootstrap_is_idempotent_and_keeps_the_password(embedded_console):
    output = embedded_console.manage("bootstrap_demo", "--no-start").stdout
    assert "exists (password unchanged)" in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_console_and_its_demo_instance(tmp_path, signum):
    """Ctrl-C and SIGTERM (systemd, docker stop) take the same way out: the worker stops, the demo
    instance is drained and stopped, the console exits 0."""
    console = EmbeddedConsole(tmp_path).start()
    wait_http(console.demo_url + "/health/ready", timeout=90)
    assert "resumed" not in console.log()  # a fresh machine has nothing left unfinished to speak of
    assert console.stop(signum) == 0, console.log()[-2000:]
    assert "stopped demo" in console.log()
    try:
        httpx.get(console.demo_url + "/health/live", timeout=2)
        raise AssertionError("the demo instance is still answering after Ctrl-C")
    except httpx.ConnectError:
        pass
    # nothing left listening on the console port either
    result = subprocess.run(["ss", "-ltn", f"sport = :{console.port}"], capture_output=True, text=True)
    assert f":{console.port}" not in result.stdout


def test_the_favicon_is_served(embedded_console):
    icon = httpx.get(embedded_console.url + "/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")


def test_serve_refuses_a_database_older_than_the_code(tmp_path):
    """An upgrade without `migrate` would serve 500s and fail every task: serve says what to run."""
    console = EmbeddedConsole(tmp_path)
    console.manage("migrate", "--noinput")
    console.manage("migrate", "operations", "0011", "--noinput")  # the code one migration ahead
    refused = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", "1"], cwd=ROOT, env=console.env, capture_output=True, text=True
    )
    assert refused.returncode == 1 and "not applied (operations.0012_rollout_skip_healthy" in refused.stderr
    assert "run `python manage.py migrate` first" in refused.stderr
