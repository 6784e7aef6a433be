"""The restart pipeline against real inference server processes (process runtime)."""

import os
import signal
import sys

import httpx
import pytest

from console.host.process import ProcessRuntime
from console.operations.models import Operation
from console.operations.pipeline import execute
from console.operations.request import request_operation
from tests.conftest import until


def run(instance, kind: str, **options) -> Operation:
    operation, _ = request_operation(instance, kind, reason="test", options=options)
    execute(operation.pk)
    operation.refresh_from_db()
    return operation


def started(instance) -> Operation:
    """A start that must succeed; when it does not, the failure says why and what the server logged."""
    operation = run(instance, "start")
    assert operation.state == "succeeded", f"{operation.error}\n{operation.log_tail}"
    return operation


@pytest.mark.django_db
def test_start_restart_stop_with_every_step_recorded(managed):
    instance = managed("proc-a")
    started = run(instance, "start")
    assert started.state == "succeeded", started.error
    assert [s["name"] for s in started.steps] == ["start", "ready", "verify"]
    first_pid = httpx.get(instance.base_url + "/health").json()["pid"]

    restarted = run(instance, "restart")
    assert restarted.state == "succeeded", restarted.error
    assert [s["name"] for s in restarted.steps] == ["drain", "stop", "release", "start", "ready", "verify"]
    assert all(s["state"] == "done" and s["started"] and s["finished"] for s in restarted.steps)
    assert "after SIGTERM" in restarted.steps[1]["detail"]
    assert str(first_pid) in restarted.steps[2]["detail"]
    new = httpx.get(instance.base_url + "/health").json()
    assert new["pid"] != first_pid and new["state"] == "ready"
    print(f"\nrestart-to-ready (process runtime, smoke model): {restarted.duration:.2f} s")

    stopped = run(instance, "stop")
    assert stopped.state == "succeeded"
    with pytest.raises(httpx.ConnectError):
        httpx.get(instance.base_url + "/health/live")


SUPERVISED = [sys.executable, "-m", "inference.supervisor"]


@pytest.mark.django_db
def test_restart_in_place_replaces_the_model_process_under_the_supervisor(managed):
    instance = managed("proc-d", command=SUPERVISED, restart_in_place=True)
    started(instance)
    supervisor = ProcessRuntime().status(instance).pids
    first_pid = httpx.get(instance.base_url + "/health").json()["pid"]

    restarted = run(instance, "restart")
    assert restarted.state == "succeeded", restarted.error
    assert [s["name"] for s in restarted.steps] == ["drain", "restart in place", "ready", "verify"]
    assert f"model process {first_pid} replaced by" in restarted.steps[1]["detail"]
    assert "GPU memory" in restarted.steps[1]["detail"]  # checked, or said why not
    new = httpx.get(instance.base_url + "/health").json()
    assert new["pid"] != first_pid and new["state"] == "ready"
    after = ProcessRuntime().status(instance).pids
    assert first_pid not in after and new["pid"] in after
    assert min(supervisor) in after  # the supervisor (the group's leader) stayed
    print(f"\nrestart in place (process runtime, smoke model): {restarted.duration:.2f} s")

    # Stop ends the supervisor and its child.
    assert run(instance, "stop").state == "succeeded"
    assert not ProcessRuntime().status(instance).pids


@pytest.mark.django_db
def test_restart_in_place_of_a_server_without_supervisor_restarts_it_whole(managed):
    instance = managed("proc-e", restart_in_place=True)  # plain inference.server
    started(instance)
    first_pid = httpx.get(instance.base_url + "/health").json()["pid"]

    restarted = run(instance, "restart")
    assert restarted.state == "succeeded", restarted.error
    # The step is named for what happened: a whole restart, and why.
    name, detail = restarted.steps[1]["name"], restarted.steps[1]["detail"]
    assert name.startswith("restart (whole: in place not possible — in place refused: HTTP 409: ")
    assert "does not run under inference.supervisor" in name
    assert "after SIGTERM" in detail and "spawned pid" in detail
    new = httpx.get(instance.base_url + "/health").json()
    assert new["pid"] != first_pid and new["state"] == "ready"  # restarted all the same, never left stopped


@pytest.mark.django_db
def test_handover_restart_refuses_no_request(managed):
    from tests.inference.test_handover import Load

    instance = managed("proc-h", command=SUPERVISED, handover=True, restart_in_place=True)
    started(instance)
    first_pid = httpx.get(instance.base_url + "/health").json()["pid"]
    load = Load(instance.base_url, clients=4)

    restarted = run(instance, "restart")
    results = load.finish()
    assert restarted.state == "succeeded", restarted.error
    assert [s["name"] for s in restarted.steps] == ["handover", "ready", "verify"]
    detail = restarted.steps[0]["detail"]
    for phase in ("new process", "serving at", f"old process {first_pid} draining", f"old process {first_pid} gone"):
        assert phase in detail, detail
    assert "GPU memory" in detail  # checked, or said why not
    new = httpx.get(instance.base_url + "/health").json()
    assert new["pid"] != first_pid and new["state"] == "ready"
    assert first_pid not in ProcessRuntime().status(instance).pids
    failures = [r for r in results if r[0] != "ok"]
    assert results and not failures, failures[:5]
    print(f"\nhandover restart (process runtime, smoke model): {restarted.duration:.2f} s, {len(results)} requests")


@pytest.mark.django_db
def test_a_restart_that_reloads_the_weights_has_them_read_by_a_new_holder(managed):
    """The weights stay in a holder across handovers, which a standby loaded ahead takes at once; a
    restart asked to reload them discards the standby (it maps the old weights), has a new holder read
    the checkpoint (its files unchanged) and a new process map those."""
    instance = managed("proc-w", command=SUPERVISED, handover=True, restart_in_place=True)
    instance.env = {**instance.env, "HOLD_WEIGHTS": "on", "HANDOVER_STANDBY": "1"}
    instance.save()
    started(instance)
    holder = httpx.get(instance.base_url + "/health").json()["weights"]["holder_pid"]
    standby = until(lambda: _standby_ready(instance), 60, every=0.1)
    plain = run(instance, "restart")
    assert plain.state == "succeeded", plain.error
    assert f"standby process {standby}, loaded ahead in" in plain.steps[0]["detail"], plain.steps[0]
    health = httpx.get(instance.base_url + "/health").json()
    assert health["pid"] == standby and health["weights"]["holder_pid"] == holder

    standby = until(lambda: _standby_ready(instance), 60, every=0.1)
    reloaded = run(instance, "restart", reload_weights=True)
    assert reloaded.state == "succeeded", reloaded.error
    assert [s["name"] for s in reloaded.steps] == ["handover", "ready", "verify"]
    detail = reloaded.steps[0]["detail"]
    assert "weights reload asked for: new weight holder" in detail and "standby" not in detail, detail
    health = httpx.get(instance.base_url + "/health").json()
    assert health["weights"]["source"] == "holder" and health["weights"]["holder_pid"] not in (holder, None)
    assert health["pid"] != standby and standby not in ProcessRuntime().status(instance).pids


def _standby_ready(instance) -> int | None:
    """The pid of the supervisor's standby once it is loaded."""
    standby = httpx.get(instance.base_url + "/health").json()["supervisor"]["standby"] or {}
    return standby.get("pid") if standby.get("state") == "ready" else None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "seen, asked",
    [
        # As a watchdog acts: the newest sample's probe got no answer; the supervisor is asked at once.
        (True, "the model process did not answer the last probe: handover asked of its supervisor (SIGUSR1)"),
        # No sample since it hung: the handover's request goes unanswered first.
        (False, "the model process did not answer: handover asked of its supervisor (SIGUSR1)"),
    ],
    ids=["seen-hung", "unseen"],
)
def test_a_hung_model_process_is_handed_over_by_signalling_its_supervisor(managed, seen, asked):
    from console.telemetry import sampler

    instance = managed("proc-j", command=SUPERVISED, handover=True, drain_timeout=2)
    instance.env = {**instance.env, "DRAIN_TIMEOUT": "2"}
    instance.save()
    started(instance)
    sampler.sample_host("local")  # the sample names the supervisor
    supervisor = min(ProcessRuntime().status(instance).pids)
    hung = httpx.get(instance.base_url + "/health").json()["pid"]
    os.kill(hung, signal.SIGSTOP)
    try:
        if seen:
            sampler.sample_host("local")  # a probe unanswered: the newest sample names nobody
        restarted = run(instance, "restart")
    finally:
        if hung in ProcessRuntime().status(instance).pids:
            os.kill(hung, signal.SIGCONT)
    assert restarted.state == "succeeded", restarted.error
    assert [s["name"] for s in restarted.steps] == ["handover", "ready", "verify"]
    detail = restarted.steps[0]["detail"]
    assert detail.startswith(asked), detail
    print(f"\nhung model process handed over ({'seen hung' if seen else 'unseen'}): {restarted.duration:.1f} s")
    assert f"old process {hung} killed" in detail and f"old process {hung} gone" in detail, detail
    pids = ProcessRuntime().status(instance).pids
    assert hung not in pids and supervisor in pids  # the supervisor stayed; the hung process is gone
    assert httpx.get(instance.base_url + "/health/ready").status_code == 200


@pytest.mark.django_db
def test_handover_of_a_server_without_supervisor_restarts_it_whole(managed):
    instance = managed("proc-i", handover=True)  # plain inference.server
    started(instance)
    first_pid = httpx.get(instance.base_url + "/health").json()["pid"]
    restarted = run(instance, "restart")
    assert restarted.state == "succeeded", restarted.error
    name, detail = restarted.steps[0]["name"], restarted.steps[0]["detail"]
    assert name.startswith("restart (whole: handover not possible — HTTP 409: "), name
    assert detail.startswith("drained") and "after SIGTERM" in detail and "spawned pid" in detail
    new = httpx.get(instance.base_url + "/health").json()
    assert new["pid"] != first_pid and new["state"] == "ready"


@pytest.mark.django_db
def test_soft_reset_reports_memory(managed):
    instance = managed("proc-b")
    run(instance, "start")
    reset = run(instance, "soft_reset")
    assert reset.state == "succeeded", reset.error
    assert "reserved memory" in reset.steps[0]["detail"]


@pytest.mark.django_db
def test_missing_program_fails_with_reason(managed):
    instance = managed("proc-c", command=["/nonexistent/bin/server"])
    operation = run(instance, "start")
    assert operation.state == "failed"
    assert "Could not run '/nonexistent/bin/server'" in operation.error


@pytest.mark.django_db
def test_crashing_server_fails_fast_with_log_tail(managed):
    crash = [sys.executable, "-c", "import sys; print('CUDA error: device-side assert'); sys.exit(3)"]
    instance = managed("proc-d", command=crash, ready_timeout=60)
    operation = run(instance, "restart")
    assert operation.state == "failed"
    assert "exited with code 3 before it became ready" in operation.error
    assert "CUDA error: device-side assert" in operation.log_tail
    assert operation.duration < 30  # it did not wait out the ready timeout
    assert not ProcessRuntime().status(instance).running


@pytest.mark.django_db
def test_never_ready_fails_within_its_timeout(managed, tmp_path):
    # A server that answers, but never /health/ready.
    instance = managed("proc-e", ready_timeout=2)
    port = instance.base_url.rsplit(":", 1)[1]
    instance.command = [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    instance.save()
    operation = run(instance, "start")
    assert operation.state == "failed"
    assert "not ready after 2 s (last answer: HTTP 404)" in operation.error
    assert operation.steps[-1]["name"] == "ready" and operation.steps[-1]["state"] == "failed"


@pytest.mark.django_db
def test_duplicate_delivery_does_nothing(managed):
    instance = managed("proc-f")
    operation = run(instance, "start")
    assert execute(operation.pk) is None  # already finished: a redelivered message is a no-op
    operation.refresh_from_db()
    assert operation.attempts == 1


@pytest.mark.django_db
def test_model_that_fails_to_load_fails_the_start_at_once(managed, tmp_path):
    instance = managed("proc-g", ready_timeout=120)
    instance.env = {**instance.env, "MODEL_PATH": str(tmp_path / "no-model-here")}
    instance.save()
    operation = run(instance, "start")
    assert operation.state == "failed"
    assert "could not load its model" in operation.error
    assert "no-model-here" in operation.error  # the server's reason, from /health/ready
    assert operation.duration < 60  # not the whole ready timeout


def test_a_recreate_is_never_in_place():
    from console.instances.models import Instance
    from console.operations.pipeline import RESTART_IN_PLACE, STEPS, steps_for

    instance = Instance(name="x", runtime=Instance.Runtime.DOCKER, restart_in_place=True)
    assert steps_for(Operation(kind="restart", instance=instance)) == RESTART_IN_PLACE
    assert steps_for(Operation(kind="restart", instance=instance, options={"recreate": True})) == STEPS["restart"]
    assert steps_for(Operation(kind="stop", instance=instance)) == STEPS["stop"]
    instance.restart_in_place = False
    assert steps_for(Operation(kind="restart", instance=instance)) == STEPS["restart"]


def test_weights_reloaded_by_a_handover_or_a_whole_restart_never_in_place():
    """In place, the new model process would map the weights the supervisor's holder keeps."""
    from console.instances.models import Instance
    from console.operations.pipeline import HANDOVER, STEPS, steps_for

    instance = Instance(name="x", runtime=Instance.Runtime.PROCESS, restart_in_place=True)
    reload = {"reload_weights": True}
    assert steps_for(Operation(kind="restart", instance=instance, options=reload)) == STEPS["restart"]
    instance.handover = True
    assert steps_for(Operation(kind="restart", instance=instance, options=reload)) == HANDOVER


@pytest.mark.django_db
def test_new_weights_without_room_beside_the_old_restart_in_place_and_fail_if_they_break_meanwhile(
    short_tmp, managed, tmp_path
):
    """A changed checkpoint that does not fit beside the held weights: the handover step restarts in
    place (the old process drains, a new holder reads the files). Files that break while the old
    process drains: the operation fails saying so, and the new process serves the old weights."""
    import json
    import shutil
    import threading
    import types

    from inference import handover
    from inference.smoke_model import write_checkpoint
    from tests.inference.helpers import InFlight, chat

    instance = managed("proc-room", command=SUPERVISED, handover=True, restart_in_place=True)
    model, scratch = tmp_path / "room-model", short_tmp
    shutil.copytree(instance.env["MODEL_PATH"], model)
    instance.env = {
        **instance.env,
        "MODEL_PATH": str(model),
        "HOLD_WEIGHTS": "on",
        "HANDOVER_MAX_BYTES": str(handover.weights_bytes(str(model)) // 2),  # never two copies
        "DEBUG_FAULTS": "1",
        "TMPDIR": str(scratch),  # where the supervisor keeps its record, read below
    }
    instance.save()

    def answer() -> str:
        reply = httpx.post(instance.base_url + "/v1/chat/completions", json=chat("describe", temperature=0), timeout=60)
        return reply.json()["choices"][0]["message"]["content"]

    started = run(instance, "start")
    assert started.state == "succeeded", started.error
    before = answer()
    weights_file = model / "model.safetensors"
    shutil.copyfile(write_checkpoint(tmp_path / "seed-1", seed=1) / "model.safetensors", weights_file)
    restarted = run(instance, "restart")
    assert restarted.state == "succeeded", restarted.error
    assert "no room for a handover" in str(restarted.steps[0]["name"]), restarted.steps[0]
    assert "beside the old" in restarted.steps[0]["detail"] and "replaced by" in restarted.steps[0]["detail"]
    served = answer()
    assert served != before

    shutil.copyfile(write_checkpoint(tmp_path / "seed-2", seed=2) / "model.safetensors", weights_file)
    record = next(scratch.glob("inference-supervisor-*/state.json"))
    handovers = len(json.loads(record.read_text())["handovers"])

    def break_files_once_it_falls_back() -> None:
        until(lambda: len(json.loads(record.read_text())["handovers"]) > handovers, timeout=60, every=0.05)
        until(lambda: json.loads(record.read_text())["handovers"][-1]["state"] == "fallback", timeout=60, every=0.05)
        weights_file.write_bytes(weights_file.read_bytes()[:4096])

    breaker = threading.Thread(target=break_files_once_it_falls_back)
    breaker.start()
    in_flight = InFlight(types.SimpleNamespace(url=instance.base_url), delay_ms=4000)  # the old process drains
    failed = run(instance, "restart")
    breaker.join(timeout=60)
    assert in_flight.result().status_code == 200
    assert failed.state == "failed", failed.steps
    assert "handover failed" in failed.error and "old weights still serve" in failed.error, failed.error
    assert "no longer looked whole" in failed.steps[0]["detail"], failed.steps[0]
    health = until(lambda: (h := httpx.get(instance.base_url + "/health").json())["state"] == "ready" and h, 60, 0.2)
    assert health["weights"]["source"] == "holder"
    assert answer() == served  # the old weights, in the new process


@pytest.mark.django_db
def test_a_handover_without_room_whose_restart_could_not_start_fails_and_the_old_process_serves(managed, tmp_path):
    """No room for a handover and a config a fresh process could not load: rather than a drained
    restart leaving nothing that serves, the operation fails saying why and the instance serves on."""
    import shutil

    instance = managed("proc-refused", command=SUPERVISED, handover=True, restart_in_place=True)
    model = tmp_path / "refused-model"
    shutil.copytree(instance.env["MODEL_PATH"], model)
    instance.env = {**instance.env, "MODEL_PATH": str(model), "HANDOVER_RESERVE_BYTES": str(2**50)}
    instance.save()
    started(instance)
    first = httpx.get(instance.base_url + "/health").json()
    config = model / "config.json"
    config.write_text(config.read_text()[:40])

    failed = run(instance, "restart")
    assert failed.state == "failed", failed.steps
    assert "no restart either" in failed.steps[0]["detail"] and "config.json" in failed.steps[0]["detail"]
    assert "old process still serves" in failed.steps[0]["detail"], failed.steps[0]
    now = httpx.get(instance.base_url + "/health").json()
    assert now["pid"] == first["pid"] and now["state"] == "ready"
