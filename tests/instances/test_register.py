"""register_instance: Docker containers and bare processes, configured as code, with clear refusals."""

import io
import sys

import pytest
from django.core.management import CommandError, call_command

from console.instances.models import Instance
from console.operations import pipeline
from console.operations.models import Operation
from tests.conftest import ROOT, free_port


def register(*args: str) -> str:
    out = io.StringIO()
    call_command("register_instance", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_process_instance_is_registered_then_updated():
    port = free_port()
    line = f"{sys.executable} bench/health_stub.py {port}"
    said = register(
        "bare-a",
        "--host",
        "box",
        "--url",
        f"http://127.0.0.1:{port}",
        "--command",
        line,
        "--working-dir",
        str(ROOT),
        "--env",
        "A=1",
        "--env",
        "B=x=y",
    )
    assert "registered bare-a on box" in said
    instance = Instance.objects.get(name="bare-a")
    assert instance.runtime == "process" and instance.command == [sys.executable, "bench/health_stub.py", str(port)]
    assert instance.env == {"A": "1", "B": "x=y"} and instance.host.name == "box"
    assert "updated" in register(
        "bare-a", "--host", "box", "--url", f"http://127.0.0.1:{port}", "--command", '["python3", "-m", "app"]'
    )
    assert Instance.objects.get(name="bare-a").command == ["python3", "-m", "app"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--command", "x", "--container", "c"], "either --container"),
        ([], "either --container"),
        (["--command", "[1, 2"], "not a JSON list"),
        (["--command", '"unclosed'], "cannot be split"),
        (["--command", "[]"], "needs its command"),
        (["--command", "python", "--env", "NOEQUALS"], "NAME=VALUE"),
    ],
)
def test_bad_registrations_are_refused_and_change_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        register("bare-b", "--host", "box", "--url", "http://127.0.0.1:9", *args)
    assert not Instance.objects.filter(name="bare-b").exists()


@pytest.mark.django_db(transaction=True)
def test_a_registered_process_without_v1_models_starts_and_is_verified_by_readiness():
    port = free_port()
    register(
        "bare-c",
        "--host",
        "local",
        "--url",
        f"http://127.0.0.1:{port}",
        "--working-dir",
        str(ROOT),
        "--command",
        f"{sys.executable} bench/health_stub.py {port}",
    )
    instance = Instance.objects.get(name="bare-c")
    operation = Operation.objects.create(instance=instance, kind="start")
    try:
        done = pipeline.execute(operation.pk)
        assert done.state == "succeeded", done.error
        assert [s["name"] for s in done.steps] == ["start", "ready", "verify"]
        assert done.steps[-1]["detail"] == "still ready (the server offers no GET /v1/models)"
    finally:
        stop = Operation.objects.create(instance=instance, kind="stop")
        assert pipeline.execute(stop.pk).state == "succeeded"
