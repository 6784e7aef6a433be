"""A try against a real model server: the answer streams, with its first-token time and request id."""

import pytest

from console.host.process import ProcessRuntime
from console.operations import trial
from tests.conftest import wait_http
from tests.inference.helpers import image_url


@pytest.mark.django_db
def test_a_try_streams_an_answer_with_its_figures(managed):
    instance = managed("trial-a")
    ProcessRuntime().start(instance)
    wait_http(instance.base_url + "/health/ready", timeout=90)
    done = trial.run(instance, 1, "try-abc123", trial.messages("describe it", image_url(64, 64)), 16)
    assert done["state"] == "done", done
    assert done["request_id"] == "try-abc123" and done["ttft_ms"] > 0 and done["pieces"] >= 1
    log = "\n".join(ProcessRuntime().log_tail(instance, 50))
    assert '"request_id": "try-abc123"' in log


@pytest.mark.django_db
def test_a_try_of_an_instance_that_is_not_ready_says_so(managed):
    instance = managed("trial-b")  # never started
    failed = trial.run(instance, 1, "try-x", trial.messages("hi", None), 8)
    assert failed["state"] == "failed" and "not ready" in failed["error"]
