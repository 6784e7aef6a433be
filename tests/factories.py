"""Small builders for console objects used across tests."""

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from console.instances.models import Host, Instance
from console.instances.roles import ensure_roles

ROOT = Path(__file__).resolve().parent.parent


def host(name: str = "local") -> Host:
    return Host.objects.get_or_create(name=name)[0]


def process_instance(name: str, server=None, **fields) -> Instance:
    """A process instance; given a ServerProcess (not started), it runs that server's model and port."""
    defaults = {
        "host": host(),
        "runtime": Instance.Runtime.PROCESS,
        "command": [sys.executable, "-m", "inference.server"],
        "working_dir": str(ROOT),
        "drain_timeout": 5,
        "stop_timeout": 10,
        "ready_timeout": 60,
    }
    if server is not None:
        defaults.update(base_url=server.url, env={**server.env}, admin_token=server.token)
    defaults.update(fields)
    defaults.setdefault("base_url", "http://127.0.0.1:9")
    return Instance.objects.create(name=name, **defaults)


def user(username: str, role: str | None = None, password: str = "pw-for-tests-123"):
    ensure_roles()
    account = get_user_model().objects.create_user(username=username, password=password)
    if role:
        account.groups.add(Group.objects.get(name=role))
    return account
