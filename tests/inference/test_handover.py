"""A handover under inference.supervisor: a new model process takes the socket before the old one
drains, under continuous streaming load, on real processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import ROOT, until
from tests.inference.helpers import InFlight, chat
from tests.inference.test_supervisor import SUPERVISOR, _admin, _alive, _health, _wait_new_process


class Load:
    """Streaming chat clients, each sending one request after another until stopped; every answer
    is kept, so a refusal, an error or an empty stream fails the test."""

    def __init__(self, base_url: str, clients: int = 8):
        self.url = base_url + "/v1/chat/completions"
        self.stop = threading.Event()
        self.results: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                try:
                    with client.stream("POST", self.url, json=chat(stream=True, max_tokens=12)) as response:
                        body = response.read().decode()
                    chunks = [line for line in body.splitlines() if line.startswith("data: {")]
                    outcome = ("ok", None) if response.status_code == 200 and chunks else (response.status_code, body)
                except httpx.HTTPError as exc:
                    outcome = (type(exc).__name__, str(exc))
                with self.lock:
                    self.results.append(outcome)

    def finish(self) -> list:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
        return self.results


def _handover(server, after: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            record = _health(server)["supervisor"]
        except httpx.TransportError:  # a fallback's drained restart closes what it had accepted
            time.sleep(0.1)
            continue
        last = record["handovers"][-1] if record["handovers"] else None
        if last and last["id"] > after and last["state"] != "running":
            return last
        time.sleep(0.1)
    raise TimeoutError("the handover did not end:\n" + server.log()[-3000:])


def handover_under_load(server, clients: int = 8) -> dict:
    """A handover asked while `clients` stream one request after another, from a second before it to
    a second after; its record, once every answer came back whole (none refused, failed or empty)."""
    load = Load(server.url, clients=clients)
    time.sleep(1)
    answer = _admin(server, "/admin/handover")
    assert answer.status_code == 202, answer.text
    done = _handover(server, answer.json()["after"])
    time.sleep(1)
    results = load.finish()
    failures = [r for r in results if r[0] != "ok"]
    assert results and not failures, failures[:5]
    return done


def test_handover_under_load_refuses_nobody(start_server):
    # The weights in a holder (on this CPU in shared memory; CUDA IPC on a GPU, tests/gpu): both
    # model processes map them from it.
    server = start_server(module=SUPERVISOR, DRAIN_TIMEOUT=30, HOLD_WEIGHTS="on")
    # The supervisor records the holder's word at its next look (every 50 ms; later on a busy
    # machine), which can come after a model process that mapped the weights is ready.
    first = until(lambda: (h := _health(server))["supervisor"]["holder"]["state"] != "loading" and h, 10, every=0.1)
    assert first["supervisor"]["serving_pid"] == first["pid"]
    held = first["supervisor"]["holder"]
    assert held["state"] == "holding" and held["bytes"] > 0, held
    assert first["weights"] == {
        "source": "holder",
        "holder_pid": held["pid"],
        "held_bytes": held["bytes"],
        "built": "assembled",  # the model around the mapped tensors, not through from_pretrained
        "skeleton": "built",  # forked before the supervisor's imports: nothing to inherit yet
    }
    load = Load(server.url)
    time.sleep(1.5)  # the clients are busy before the handover begins

    answer = _admin(server, "/admin/handover")
    assert answer.status_code == 202, answer.text
    assert _admin(server, "/admin/handover").json()["error"]["code"] == "handover_running"  # one at a time
    done = _handover(server, answer.json()["after"])
    time.sleep(1.5)  # and stay busy after it
    results = load.finish()

    assert done["state"] == "done", done
    assert [p["name"] for p in done["phases"]] == [
        "new process started",
        "weights mapped",
        "new process serving",
        "old process draining",
        "old process gone",
    ]
    assert done["old_pid"] == first["pid"] and done["new_pid"] != first["pid"]
    failures = [r for r in results if r[0] != "ok"]
    assert len(results) > 20 and not failures, failures[:5]
    assert not _alive(first["pid"])
    after = _health(server)
    assert after["pid"] == done["new_pid"] and after["state"] == "ready"
    assert after["supervisor"]["serving_pid"] == done["new_pid"]
    assert after["weights"]["source"] == "holder" and after["supervisor"]["holder"] == held  # the same holder
    assert after["weights"]["skeleton"] == "inherited"  # the supervisor's, built after its imports
    log = server.log()
    assert '"msg": "retiring: the new process serves"' in log and '"msg": "handover done"' in log


def test_a_new_process_that_cannot_load_leaves_the_old_one_serving(start_server, smoke_model, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(smoke_model, checkpoint)
    server = start_server(module=SUPERVISOR, MODEL_PATH=str(checkpoint))
    first = _health(server)
    config = checkpoint / "config.json"
    good = config.read_text()
    config.write_text(json.dumps({"model_type": "no_such_model"}))  # what the new process will read
    try:
        answer = _admin(server, "/admin/handover")
        assert answer.status_code == 202
        failed = _handover(server, answer.json()["after"])
    finally:
        config.write_text(good)
    assert failed["state"] == "failed" and "still serves" in failed["why"]
    now = _health(server)
    assert now["pid"] == first["pid"] and now["state"] == "ready"
    reply = httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=60)
    assert reply.status_code == 200

    # Mended, the next handover works.
    answer = _admin(server, "/admin/handover")
    assert _handover(server, answer.json()["after"])["state"] == "done"


def test_no_room_for_two_models_restarts_the_drained_way(start_server, smoke_model, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(smoke_model, checkpoint)
    # a handover's reserve more than any host has
    server = start_server(
        module=SUPERVISOR, MODEL_PATH=str(checkpoint), HANDOVER_RESERVE_BYTES=str(2**50), DEBUG_FAULTS=1
    )
    first = _health(server)

    # A config a fresh process could not load (cut short): nothing is drained, the old one serves.
    config = checkpoint / "config.json"
    good = config.read_text()
    config.write_text(good[: len(good) // 2])
    try:
        refused = _handover(server, _admin(server, "/admin/handover").json()["after"])
    finally:
        config.write_text(good)
    assert refused["state"] == "failed", refused
    assert "a fresh process could not start" in refused["why"] and "config.json" in refused["why"], refused
    assert "still serves" in refused["why"] and refused["phases"][-1]["name"] == "fallback refused"
    assert _health(server)["pid"] == first["pid"] and _health(server)["state"] == "ready"
    assert httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=60).status_code == 200

    # Mended: the drained way.
    answer = _admin(server, "/admin/handover")
    assert answer.status_code == 202
    fallback = _handover(server, answer.json()["after"])
    assert fallback["state"] == "fallback"
    assert "a second model needs" in fallback["why"] and "free" in fallback["why"]
    second = _wait_new_process(server, first["pid"])
    assert not _alive(first["pid"])

    # Cut while the old process drains, after the check: the fresh process cannot load it and says
    # so (state failed, the reason in /health) on the same socket, the supervisor up; mended, a
    # restart serves again.
    request = InFlight(server, 4000)  # the config is cut while it drains: seconds to spare
    fallback = _handover(server, _admin(server, "/admin/handover").json()["after"])
    assert fallback["state"] == "fallback", fallback
    config.write_text(good[: len(good) // 2])
    try:
        assert request.result().status_code == 200  # the drain finished what it had
        third = _wait_new_process(server, second["pid"], states=("ready", "degraded", "failed"))
    finally:
        config.write_text(good)
    assert third["state"] == "failed" and "config" in third["load_error"], third
    ready = httpx.get(server.url + "/health/ready", timeout=5)  # what a console waiting for ready reads
    assert ready.status_code == 503 and ready.json()["load_error"] == third["load_error"][:500]
    assert server.proc.poll() is None
    assert _admin(server, "/admin/restart").status_code == 202
    _wait_new_process(server, third["pid"])
    assert httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=60).status_code == 200


def test_no_room_found_after_mapping_held_weights_restarts_the_drained_way(start_server):
    """With the weights in a holder the room is checked once the new process has built its model: no
    room then still ends in the drained restart, with why, and the holder's weights serve on."""
    server = start_server(module=SUPERVISOR, HOLD_WEIGHTS="on", HANDOVER_RESERVE_BYTES=str(2**50))
    first = _health(server)
    fallback = _handover(server, _admin(server, "/admin/handover").json()["after"])
    assert fallback["state"] == "fallback", fallback
    assert "a second model needs" in fallback["why"] and "free" in fallback["why"], fallback
    names = [p["name"] for p in fallback["phases"]]
    assert "weights mapped" in names and "new process serving" not in names, names
    second = _wait_new_process(server, first["pid"])
    assert second["weights"]["source"] == "holder" and second["weights"]["holder_pid"] == first["weights"]["holder_pid"]
    assert httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=60).status_code == 200


def test_handover_needs_the_token_and_the_supervisor(start_server):
    plain = start_server()
    refused = _admin(plain, "/admin/handover")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_supervised"
    assert _health(plain)["supervisor"] is None
    supervised = start_server(module=SUPERVISOR)
    assert _admin(supervised, "/admin/handover", token="wrong").status_code == 401
    record = _health(supervised)["supervisor"]
    assert record["pid"] == supervised.proc.pid and record["handovers"] == []
    # HOLD_WEIGHTS=auto holds weights on a GPU only: here each process read its own.
    deadline = time.monotonic() + 30
    while record["holder"]["state"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.1)
        record = _health(supervised)["supervisor"]
    assert record["holder"]["state"] == "not held" and "cpu" in record["holder"]["why"], record
    assert _health(supervised)["weights"] == {"source": "files", "built": "assembled", "skeleton": "built"}


def test_the_weight_holders_death_ends_the_supervisor_as_a_crash(start_server):
    """The serving process reads the holder's memory: without it the server must not go on as if
    nothing happened, but end so the container's restart policy and the console see it."""
    server = start_server(module=SUPERVISOR, HOLD_WEIGHTS="on", DRAIN_TIMEOUT=2)
    health = _health(server)
    held = health["supervisor"]["holder"]
    os.kill(held["pid"], signal.SIGKILL)
    assert server.proc.wait(60) == 128 + signal.SIGKILL
    assert not _alive(health["pid"])
    assert '"msg": "the weight holder ended; the supervisor ends with it"' in server.log()


def test_a_hung_old_process_is_killed_once_it_outlives_its_drain(start_server):
    server = start_server(module=SUPERVISOR, DRAIN_TIMEOUT=2)
    first = _health(server)
    os.kill(first["pid"], signal.SIGSTOP)  # hung: it neither answers nor ends
    try:
        os.kill(server.proc.pid, signal.SIGUSR1)  # what /admin/handover asks of the supervisor
        done = _handover(server, 0, timeout=120)
    finally:
        if _alive(first["pid"]):
            os.kill(first["pid"], signal.SIGCONT)
    assert done["state"] == "done", done
    names = [p["name"] for p in done["phases"]]
    assert names[-2:] == ["old process killed", "old process gone"], names
    killed = next(p for p in done["phases"] if p["name"] == "old process killed")
    serving = next(p for p in done["phases"] if p["name"] == "new process serving")
    assert killed["seconds"] - serving["seconds"] >= 2 + 10 - 0.5  # its drain and the grace, not sooner
    assert not _alive(first["pid"])
    assert _health(server)["pid"] == done["new_pid"]


def test_an_unknown_hold_weights_mode_is_refused_at_start(tmp_path):
    env = {**os.environ, "MODEL_PATH": str(tmp_path), "HOLD_WEIGHTS": "sometimes", "PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", SUPERVISOR], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "HOLD_WEIGHTS must be one of auto, on, off, not 'sometimes'" in done.stderr


@pytest.mark.parametrize("hold", ["off", "on"])
def test_room_for_a_smaller_kv_cache_only_hands_over_with_fewer_slots_then_grows_back(start_server, smoke_model, hold):
    """HANDOVER_MAX_BYTES leaves the new process room for its weights (none when a holder keeps them),
    the reserve and two and a half of its four KV cache slots: it starts with two, serves without
    refusing anybody, and grows to four once there is room."""
    from inference import handover

    slot = handover.kv_slot_bytes(str(smoke_model), 4096, 4)  # float32 on a CPU, MAX_CONTEXT below
    reserve = 64 * 2**20
    room = (handover.weights_bytes(str(smoke_model)) if hold == "off" else 0) + reserve + int(2.5 * slot)
    server = start_server(
        module=SUPERVISOR,
        MAX_CONCURRENCY="4",
        MAX_CONTEXT="4096",
        HANDOVER_RESERVE_BYTES=str(reserve),
        HANDOVER_MAX_BYTES=str(room),
        HOLD_WEIGHTS=hold,
    )
    assert _health(server)["decoder"]["slots"] == 4
    done = handover_under_load(server, clients=6)
    assert done["state"] == "done", done
    names = [p["name"] for p in done["phases"]]
    smaller = [p for p in done["phases"] if p["name"] == "smaller kv cache"]
    assert smaller and smaller[0]["slots"] == 2 and smaller[0]["wanted"] == 4, done["phases"]
    if hold == "on":  # mapped weights take no room: checked once the model is built, not before mapping
        assert names.index("weights mapped") < names.index("smaller kv cache"), names
    deadline = time.monotonic() + 30
    while (decoder := _health(server)["decoder"])["slots"] != 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert decoder["slots"] == 4 and decoder["slots_wanted"] == 4, decoder
    assert '"had": 2' in server.log() and "KV cache grown" in server.log()


def _answer(server) -> str:
    reply = httpx.post(server.url + "/v1/chat/completions", json=chat("describe", temperature=0), timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_changed_checkpoint_is_read_by_a_new_holder_at_the_next_handover(start_server, smoke_model, tmp_path, device):
    """The weights are held for every model process; a handover after the checkpoint changed reads
    the new files in a second holder, which replaces the first once the old process is gone. New
    files that cannot be read fail the handover and the old weights go on serving."""
    from inference.smoke_model import write_checkpoint

    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    other = write_checkpoint(tmp_path / "other", seed=1) / "model.safetensors"
    server = start_server(module=SUPERVISOR, HOLD_WEIGHTS="on", MODEL_PATH=str(model), DRAIN_TIMEOUT=5, DEVICE=device)
    first = _health(server)
    holder_pid = first["supervisor"]["holder"]["pid"]
    assert first["weights"]["source"] == "holder"
    before = _answer(server)

    # Unreadable new weights: a failed handover, the old ones still serve.
    weights_file = model / "model.safetensors"
    original, read_at = weights_file.read_bytes(), weights_file.stat()
    weights_file.write_bytes(b"not a checkpoint" * 64)
    failed = _handover(server, _admin(server, "/admin/handover").json()["after"])
    assert failed["state"] == "failed" and "could not be read" in failed["why"], failed
    assert [p["name"] for p in failed["phases"]] == ["reading new weights", "new weights failed"]
    assert _health(server)["pid"] == first["pid"] and _alive(holder_pid)
    assert _answer(server) == before

    # Readable new weights: served by a new process mapping them from a new holder. Copied over the
    # old file keeping its size and modification time, as `cp -p` or `rsync -a` would.
    shutil.copyfile(other, weights_file)
    os.utime(weights_file, ns=(read_at.st_atime_ns, read_at.st_mtime_ns))
    assert weights_file.read_bytes() != original and weights_file.stat().st_size == read_at.st_size
    done = _handover(server, _admin(server, "/admin/handover").json()["after"])
    assert done["state"] == "done", done
    names = [p["name"] for p in done["phases"]]
    assert names[:3] == ["reading new weights", "new weights held", "new process started"], names
    assert names[-2:] == ["old process gone", "old weights released"], names
    # By the time the record says done the old weights went with the last process mapping them, and
    # the new holder is the one reported
    assert not _alive(holder_pid)
    now = _health(server)
    assert now["pid"] == done["new_pid"] and now["weights"]["source"] == "holder"
    new_holder = now["weights"]["holder_pid"]
    assert new_holder != holder_pid and now["supervisor"]["holder"]["pid"] == new_holder
    assert _answer(server) != before

    # The checkpoint unchanged since: the next handover maps the same holder's weights.
    again = _handover(server, _admin(server, "/admin/handover").json()["after"])
    assert again["state"] == "done" and "reading new weights" not in [p["name"] for p in again["phases"]]
    assert _health(server)["weights"]["holder_pid"] == new_holder
    answer = _answer(server)

    # Asked to read the weights again although the files did not change: a new holder all the same.
    refused = _admin(server, "/admin/handover?reload_weights=maybe")
    assert refused.status_code == 400 and "reload_weights" in refused.text
    reloaded = _handover(server, _admin(server, "/admin/handover?reload_weights=true").json()["after"])
    assert reloaded["state"] == "done", reloaded
    assert [p["name"] for p in reloaded["phases"]][:2] == ["reloading weights", "new weights held"]
    assert _health(server)["weights"]["holder_pid"] not in (new_holder, holder_pid)
    assert _answer(server) == answer


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_new_weights_without_room_for_both_copies_are_read_the_drained_way(
    short_tmp, start_server, smoke_model, tmp_path, device
):
    """A changed checkpoint whose weights do not fit beside the held ones: the old process drains and
    exits, the old holder ends, a new holder reads the new files and a new process maps them. Broken
    new files are found before anything stops: the handover fails and the old weights go on; files
    broken while the old process drains keep the old holder, whose weights the next process maps."""
    from inference import handover
    from inference.smoke_model import write_checkpoint

    model, run = tmp_path / "model", short_tmp
    shutil.copytree(smoke_model, model)
    other = write_checkpoint(tmp_path / "other", seed=1) / "model.safetensors"
    room = handover.weights_bytes(str(model)) // 2  # the new weights fit once, never beside the old
    server = start_server(
        module=SUPERVISOR,
        HOLD_WEIGHTS="on",
        MODEL_PATH=str(model),
        DRAIN_TIMEOUT=5,
        HANDOVER_MAX_BYTES=str(room),
        DEVICE=device,
        DEBUG_FAULTS="1",
        TMPDIR=str(run),  # where the supervisor keeps its record, read below while nothing serves
    )
    first = _health(server)
    holder_pid = first["supervisor"]["holder"]["pid"]
    before = _answer(server)

    weights_file = model / "model.safetensors"
    whole = weights_file.read_bytes()
    weights_file.write_bytes(whole[: len(whole) // 2])  # cut short: its header promises more
    failed = _handover(server, _admin(server, "/admin/handover").json()["after"])
    assert failed["state"] == "failed" and "could not be read" in failed["why"], failed
    assert _health(server)["pid"] == first["pid"] and _alive(holder_pid)
    assert _answer(server) == before
    assert "its tensors end at byte" in server.log()

    shutil.copyfile(other, weights_file)
    done = _handover(server, _admin(server, "/admin/handover").json()["after"])
    assert done["state"] == "fallback", done
    assert [p["name"] for p in done["phases"]] == ["reading new weights", "fallback: drained restart"]
    assert "beside the old" in done["why"] and "once the old process is gone" in done["why"], done
    now = _wait_new_process(server, first["pid"])
    mapped = now["weights"]["source"] == "holder" and now["weights"]["holder_pid"] != holder_pid
    assert mapped, (now["weights"], server.log()[-3000:])  # why it read the files, if it did
    assert now["supervisor"]["holder"]["pid"] == now["weights"]["holder_pid"]
    assert not _alive(holder_pid)
    served = _answer(server)
    assert served != before

    # Whole when the handover checks them, cut short while the old process drains (a request holds
    # it): the old holder stays and the next process maps its weights.
    shutil.copyfile(write_checkpoint(tmp_path / "third", seed=2) / "model.safetensors", weights_file)
    holder_pid = now["supervisor"]["holder"]["pid"]
    in_flight = InFlight(server, delay_ms=4000)
    after = _admin(server, "/admin/handover").json()["after"]
    record = next(run.glob("inference-supervisor-*/state.json"))

    def last(state: str) -> dict | None:
        handovers = [h for h in json.loads(record.read_text())["handovers"] if h["id"] > after]
        return handovers[-1] if handovers and handovers[-1]["state"] == state else None

    until(lambda: last("fallback"), timeout=60, every=0.05)
    weights_file.write_bytes(weights_file.read_bytes()[:4096])
    assert in_flight.result().status_code == 200  # drained: the request in flight was answered
    failed = until(lambda: last("failed"), timeout=60, every=0.1)
    assert "could not be read" in failed["why"], failed
    assert "old weights still serve" in failed["why"]
    assert [p["name"] for p in failed["phases"]][-1] == "new weights unreadable", failed
    latest = _wait_new_process(server, now["pid"])
    assert latest["supervisor"]["holder"]["pid"] == holder_pid and _alive(holder_pid)
    assert latest["weights"]["holder_pid"] == holder_pid
    assert _answer(server) == served
