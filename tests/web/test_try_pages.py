"""Try it: operators only, only a ready instance, bad input refused with its reason, and audited."""

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from console.audit.models import AuditEntry
from console.operations.models import Operation
from console.telemetry.models import Sample
from tests.factories import process_instance, user

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@pytest.fixture
def instance(db):
    return process_instance("try-a", command=["true"])


def as_role(role: str) -> Client:
    client = Client()
    client.force_login(user(f"try-{role}", role))
    return client


def ready(instance) -> None:
    Sample.objects.create(instance=instance, at=timezone.now(), status="ready", probe_ok=True)


def test_a_viewer_cannot_try(instance):
    ready(instance)
    response = as_role("viewer").post("/instances/try-a/try/", {"prompt": "hi", "max_tokens": 8})
    assert response.status_code == 403 and not AuditEntry.objects.filter(action="instance.try").exists()


def test_an_instance_that_is_not_ready_is_refused(instance):
    operator = as_role("operator")
    never = operator.post("/instances/try-a/try/", {"prompt": "hi", "max_tokens": 8})
    assert never.status_code == 409 and b"not sampled lately" in never.content
    ready(instance)
    Operation.objects.create(instance=instance, kind="restart", state="running")
    busy = operator.post("/instances/try-a/try/", {"prompt": "hi", "max_tokens": 8})
    assert busy.status_code == 409 and b"is running" in busy.content


@pytest.mark.parametrize(
    "data, message",
    [
        ({"prompt": "", "max_tokens": 8}, b"prompt"),
        ({"prompt": "x" * 4001, "max_tokens": 8}, b"prompt"),
        ({"prompt": "hi", "max_tokens": 9999}, b"max_tokens"),
        ({"prompt": "hi", "max_tokens": 8, "image": SimpleUploadedFile("x.png", b"not an image")}, b"PNG, JPEG"),
        (
            {"prompt": "hi", "max_tokens": 8, "image": SimpleUploadedFile("x.png", b"\x89PNG" + b"0" * 3_000_000)},
            b"larger than",
        ),
    ],
)
def test_bad_input_is_refused_with_its_reason(instance, data, message):
    ready(instance)
    response = as_role("operator").post("/instances/try-a/try/", data)
    assert response.status_code == 400 and message in response.content


def test_a_try_is_sent_and_audited(instance):
    ready(instance)
    response = as_role("operator").post(
        "/instances/try-a/try/", {"prompt": "describe", "max_tokens": 8, "image": SimpleUploadedFile("p.png", PNG)}
    )
    assert response.status_code == 200 and b'data-trial="try-' in response.content
    entry = AuditEntry.objects.get(action="instance.try")
    assert entry.actor == "try-operator" and entry.reason == "describe" and "with an image" in entry.outcome
