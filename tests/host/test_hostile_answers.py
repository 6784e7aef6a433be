"""A model server (or anything at its address) answering JSON of the wrong shapes, or nested past
Python's recursion limit, is read as not answering sensibly: a clear reason, never an exception that
ends the sample, the trial or the operation that asked."""

import pytest

from console.host.server import ModelServer
from console.host.vllm import VllmServer
from tests.host.conftest import sampled


def test_json_nested_too_deeply_is_not_json_to_any_reader(hostile):
    """Before, each of these raised RecursionError (not ValueError) out of the reader."""
    url = hostile("deep")
    with ModelServer(url) as server:
        probe = server.probe(timeout=10)
        assert not probe.ok and str(probe.error) == "/health did not return JSON"
        assert server.soft_reset() == {}
        assert server.models() == []
        assert server.in_flight() is None and server.serving_pid() is None
    with VllmServer(url) as vllm:
        assert vllm.held(timeout=10) is None


def test_a_chat_stream_of_odd_chunks_yields_only_the_text_of_good_ones(hostile):
    """Chunks nested too deeply, choices that are a string, a choice or a delta that is not an object:
    skipped (before, the first raised RecursionError and the others AttributeError, and the operator's
    trial never ended on the page)."""
    with ModelServer(hostile("deep")) as server:
        assert list(server.chat_stream([{"role": "user", "content": "hi"}], 8, "req-1", timeout=10)) == ["ok"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["deep", "odd"])
def test_a_sampling_round_records_a_server_answering_odd_json(mode):
    """Before, neither was recorded at all (the round logged "sampling … failed"): the instance kept
    its last sample, the dashboard and the watchdog blind to it."""
    sample = sampled(f"odd-{mode}", mode)
    if mode == "deep":
        assert sample.status == "down" and sample.data["detail"] == "/health did not return JSON"
        return
    assert sample.status == "ready" and sample.probe_ok
    figures = ("in_flight", "rps", "p50_ms", "p95_ms", "allocated", "reserved", "fragmentation", "rss", "fds")
    assert {name: getattr(sample, name) for name in figures} == dict.fromkeys(figures)
    data = sample.data
    assert (data["uptime"], data["server_pid"], data["requests"], data["tokens_per_second"]) == (None,) * 4
    assert data["supervisor_pid"] is None
    assert data["standby"] == {"state": "ready", "pid": None, "load_seconds": None, "why": ""}
    assert len(data["engine"]) == 32 and data["engine"]["figure31"] == 31


def test_a_handover_record_of_the_wrong_shapes_reads_as_unknowns(hostile):
    """The record's figures end up in an operation's steps: before, a phase's seconds of 10**400 raised
    OverflowError as the step was written, a name that was an object was shown as its repr."""
    from console.operations.pipeline import _phases

    with ModelServer(hostile("odd")) as server:
        odd = server.handover_record(1)
        newest = server.handover_record(None, since=0)
    assert {key: odd[key] for key in ("id", "state", "old_pid", "began", "why")} == {
        "id": 1,
        "state": None,
        "old_pid": None,
        "began": None,
        "why": "",
    }
    assert str(_phases(odd)) == "? at 0.0 s; new process ? ended with code None at 0.0 s"
    assert newest["id"] == 2 and newest["old_pid"] == 1234 and str(_phases(newest)) == "x at 0.5 s"


def test_other_answers_of_the_wrong_shapes_read_as_unknowns(hostile):
    """What the pipeline writes into its steps stays a short line: before, 1,000 model ids of 300
    characters each made the verify step's line, an object the readiness's reason."""
    from console.host.server import ServerError, listed

    with ModelServer(hostile("odd")) as server:
        readiness = server.readiness()
        assert (readiness.ready, readiness.failed, readiness.answer) == (False, True, "")
        models = server.models()
        assert len(models) == 97 and all(len(m) == 200 for m in models) and models[0].startswith("model-0-mmm")
        assert listed(models).endswith(" and 92 more") and len(listed(models)) < 1100
        assert server.in_flight() is None and server.serving_pid() is None  # "many", "12"
        assert server.restart_in_place() is None  # its pid: true
        with pytest.raises(ServerError, match="HTTP 202"):
            server.handover()  # its id: true
