"""Hardening: login throttling, CSRF, roles, expired sessions on WebSockets, deploy checks."""

import os
import secrets
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client

from console.asgi import application
from console.operations.models import Operation
from tests.conftest import ROOT
from tests.factories import process_instance, user


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_repeated_failed_sign_ins_lock_the_account_from_that_address(db, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    user("throttled", role="viewer")
    attacker = Client(REMOTE_ADDR="10.6.6.6")
    for _ in range(3):
        assert attacker.post("/accounts/login/", {"username": "throttled", "password": "guess"}).status_code == 200
    locked = attacker.post("/accounts/login/", {"username": "throttled", "password": "pw-for-tests-123"})
    assert locked.status_code == 200 and "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in attacker.session
    # The owner, from their own address, still gets in; so does the admin login page's throttle apply.
    owner = Client(REMOTE_ADDR="10.1.1.1")
    assert owner.post("/accounts/login/", {"username": "throttled", "password": "pw-for-tests-123"}).status_code == 302
    admin_page = attacker.post("/admin/login/", {"username": "throttled", "password": "pw-for-tests-123"})
    assert "Too many failed sign-ins" in admin_page.content.decode()


def test_state_changes_need_the_csrf_token(db):
    process_instance("csrf-a", command=["true"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(user("csrf-op", role="operator"))
    response = client.post("/instances/csrf-a/operations/", {"kind": "restart", "reason": "x"})
    assert response.status_code == 403 and not Operation.objects.exists()
    page = client.get("/instances/csrf-a/")
    token = page.cookies["csrftoken"].value
    ok = client.post("/instances/csrf-a/operations/", {"kind": "restart"}, HTTP_X_CSRFTOKEN=token)
    assert ok.status_code in (200, 302) and Operation.objects.count() == 1


def test_a_viewer_cannot_restart_nor_edit_schedules(db):
    process_instance("viewer-a", command=["true"])
    client = Client()
    client.force_login(user("viewer-x", role="viewer"))
    assert client.post("/instances/viewer-a/operations/", {"kind": "restart"}).status_code == 403
    assert client.post("/rollouts/", {"instances": "viewer-a", "strategy": "rolling"}).status_code == 403
    assert client.post("/schedules/new/", {"name": "x"}).status_code == 403
    assert not Operation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_expired_session_cannot_open_a_websocket():
    client = Client()
    client.force_login(user("ws-user", role="viewer"))
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    Session.objects.all().delete()  # expired / logged out elsewhere

    async def scenario():
        communicator = WebsocketCommunicator(
            application,
            "/ws/dashboard/",
            headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())],
        )
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (False, 4401)


def test_deploy_checks_are_clean_with_production_settings(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "CONSOLE_VAR_DIR": str(tmp_path),
        "CONSOLE_HTTPS": "true",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "console.example.org",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATABASE_URL": "postgres://console:secret@127.0.0.1:5432/console",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_no_change_of_address_escapes_the_per_account_limit(db, settings):
    settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_ACCOUNT_FAILURE_LIMIT = 3, 6
    user("target", role="viewer")
    for n in range(6):  # two guesses each from three addresses: under the per-address limit
        guesser = Client(REMOTE_ADDR=f"10.7.0.{n // 2}")
        guesser.post("/accounts/login/", {"username": "target", "password": "guess"})
    fresh = Client(REMOTE_ADDR="10.7.9.9")
    refused = fresh.post("/accounts/login/", {"username": "Target", "password": "pw-for-tests-123"})
    assert "Too many failed sign-ins" in refused.content.decode() and "_auth_user_id" not in fresh.session
