"""A model server (or anything at its address) that answers a byte at a time, or without end, never
holds up the console: every request to it ends within its timeout, body included, and a sampling
round still ends and records the instance as not answering."""

import threading

import pytest

from console.host.server import ModelServer
from console.instances.models import Host
from tests.host.conftest import sampled


def probe_within(url: str, timeout: float, hang: float = 60):
    """The probe, run on a thread that is given `hang` seconds: it returns, or the test fails."""
    result = []
    thread = threading.Thread(target=lambda: result.append(ModelServer(url).probe(timeout=timeout)), daemon=True)
    thread.start()
    thread.join(hang)
    assert result, f"the probe of {url} had not returned after {hang} s"
    return result[0]


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_an_answer_trickled_a_byte_a_second_times_out(hostile, mode):
    probe = probe_within(hostile(mode), timeout=2)
    assert not probe.ok and probe.timed_out and "no answer within 2 s" in str(probe.error)


def test_an_answer_past_the_size_cap_is_cut_off(hostile):
    probe = probe_within(hostile("huge"), timeout=20)
    assert not probe.ok and not probe.timed_out and "larger than 8 MiB" in str(probe.error)


@pytest.mark.django_db(transaction=True)
def test_a_sampling_round_ends_with_a_trickling_instance_down():
    sample = sampled("trickling", "body")
    assert sample.status == "down" and not sample.probe_ok and "no answer within" in sample.data["detail"]
    assert Host.objects.get(name="local").seen_at is not None
