"""Small builders for console objects used across tests."""

import sys
from datetime import timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from console.instances.models import Host, Instance
from console.instances.roles import ensure_roles
from console.telemetry.models import Sample

ROOT = Path(__file__).resolve().parent.parent
GiB = 2**30


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


def sample_history(instance, n=10, **overrides):
    """n samples of a healthy server a few seconds apart ending now; overrides may be callables of the index."""
    now = timezone.now()
    for i in range(n):
        figures = {
            "status": "ready",
            "probe_ok": True,
            "p95_ms": 100.0,
            "gpu_used": 20 * GiB,
            "gpu_total": 80 * GiB,
            "established": 3,
            "close_wait": 0,
            "time_wait": 0,
            "data": {"uptime": 3600 + i * 5, "pids": [10], "server_pid": 10, "tcp": {"LISTEN": 1}, "signatures": {}},
        }
        for key, value in overrides.items():
            figures[key] = value(i) if callable(value) else value
        Sample.objects.create(instance=instance, at=now - timedelta(seconds=5 * (n - i)), **figures)
