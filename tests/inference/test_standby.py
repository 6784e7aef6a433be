"""HANDOVER_STANDBY under inference.supervisor: a model process loaded ahead takes the next handover
at once; a new one follows; a stale one is discarded; one still loading takes it once loaded; one
that cannot load is not tried again."""

import os
import shutil
import signal
import time

import httpx

from tests.conftest import until, wait_http
from tests.inference.helpers import chat
from tests.inference.test_handover import Load, _handover, handover_under_load
from tests.inference.test_supervisor import SUPERVISOR, _admin, _alive, _health


def _standby(server, state: str, not_pids: tuple = (), timeout: float = 60) -> dict:
    """The supervisor's record once its standby is in `state` and none of `not_pids`."""

    def seen():
        standby = _health(server)["supervisor"].get("standby") or {}
        return standby if standby.get("state") == state and standby.get("pid") not in not_pids else None

    try:
        return until(seen, timeout, every=0.1)
    except AssertionError:
        raise AssertionError(f"no standby {state}: {_health(server)['supervisor']}\n{server.log()[-3000:]}") from None


def test_a_standby_takes_the_handover_at_once_and_a_new_one_follows(start_server, smoke_model, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(smoke_model, checkpoint)
    server = start_server(
        module=SUPERVISOR, MODEL_PATH=str(checkpoint), HOLD_WEIGHTS="on", HANDOVER_STANDBY="1", DRAIN_TIMEOUT="30"
    )
    first = _health(server)
    standby = _standby(server, "ready")
    assert standby["pid"] != first["pid"] and _alive(standby["pid"])
    # Loaded, it serves nobody: every answer still comes from the serving process.
    assert {_health(server)["pid"] for _ in range(10)} == {first["pid"]}

    done = handover_under_load(server)  # 8 streaming clients: none refused, failed or empty
    assert done["state"] == "done", done
    names = [p["name"] for p in done["phases"]]
    assert names == ["standby taking over", "new process serving", "old process draining", "old process gone"]
    taking, serving = done["phases"][0], done["phases"][1]
    assert done["new_pid"] == taking["pid"] == standby["pid"]
    # It loaded nothing more: the load it reports serving is the one it did ahead.
    assert serving["load_seconds"] == taking["load_seconds"] == standby["load_seconds"]
    assert not _alive(first["pid"])
    assert _health(server)["pid"] == standby["pid"]

    # The next standby, beside the new serving process.
    second = _standby(server, "ready", not_pids=(standby["pid"],))
    assert second["pid"] not in (first["pid"], standby["pid"])

    # The checkpoint changed since it loaded (a file beside the weights: no new weights to read): the
    # stale standby is discarded and the handover forks a new process as without one.
    (checkpoint / "NOTES.md").write_text("fine-tuned on the operators' screenshots\n")
    done = handover_under_load(server)
    assert done["state"] == "done", done
    assert [p["name"] for p in done["phases"]][:2] == ["new process started", "weights mapped"], done
    assert done["new_pid"] != second["pid"] and not _alive(second["pid"])
    assert "the checkpoint's files changed since it loaded" in server.log()
    third = _standby(server, "ready", not_pids=(standby["pid"], second["pid"]))

    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(60) == 0
    assert not _alive(third["pid"]) and not _alive(done["new_pid"])


def test_a_standby_without_room_is_recorded_and_not_tried_again(start_server, smoke_model):
    """Room for a handover's two processes for a few seconds, not for a standby kept beside the
    serving one for good (it leaves that one its HANDOVER_RESERVE_BYTES too): no standby, recorded
    as such, not forked again; the handover takes the usual way."""
    from inference import handover

    slot = handover.kv_slot_bytes(str(smoke_model), 4096, 4)  # float32 on a CPU, MAX_CONTEXT below
    reserve = 256 * 2**20
    room = handover.weights_bytes(str(smoke_model)) + reserve + 4 * slot + 16 * 2**20
    server = start_server(
        module=SUPERVISOR,
        HANDOVER_STANDBY="1",
        MAX_CONCURRENCY="4",
        MAX_CONTEXT="4096",
        HANDOVER_RESERVE_BYTES=str(reserve),
        HANDOVER_MAX_BYTES=str(room),
    )
    failed = _standby(server, "failed")
    assert failed["why"].startswith("no room beside the serving process: a second model needs"), failed
    assert not _alive(failed["pid"])
    # Not forked again for this serving process (it would fail the same way, again and again).
    assert httpx.post(server.url + "/v1/chat/completions", json=chat(), timeout=60).status_code == 200
    assert _health(server)["supervisor"]["standby"] == failed
    assert server.log().count('"role": "standby"') == 1

    done = handover_under_load(server, clients=4)
    assert done["state"] == "done", done
    assert [p["name"] for p in done["phases"]][:2] == ["new process started", "new process serving"], done
    assert "smaller kv cache" not in [p["name"] for p in done["phases"]]  # room for all four slots


def test_no_standby_beside_a_process_that_has_not_loaded(start_server, smoke_model, tmp_path):
    """A standby is forked once the serving process has loaded (its room check then counts what that
    one holds), not when it merely listens: beside one whose load failed, none."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(smoke_model, checkpoint)
    weights = next(checkpoint.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-64])  # cut short: the load fails, the server stays up
    server = start_server(wait=False, module=SUPERVISOR, MODEL_PATH=str(checkpoint), HANDOVER_STANDBY="1")
    wait_http(server.url + "/health", 60)
    until(lambda: _health(server)["state"] == "failed", 60, every=0.1)
    until(lambda: '"msg": "imports ready"' in server.log(), 60, every=0.1)
    time.sleep(1)  # twenty of the supervisor's looks
    assert _health(server)["supervisor"]["standby"] is None
    assert '"role": "standby"' not in server.log()


def test_a_standby_still_loading_takes_the_handover_once_loaded(start_server, smoke_model):
    """A handover asked while the standby still loads waits for it, the serving process answering
    meanwhile, rather than fork yet another process. The standby is held at its load by the weight
    holder it asks for the weights, stopped (SIGSTOP) for as long as the test needs."""

    server = start_server(module=SUPERVISOR, HOLD_WEIGHTS="on", HANDOVER_STANDBY="1", DRAIN_TIMEOUT="30")
    holder = until(lambda: (h := _health(server)["supervisor"]["holder"])["state"] == "holding" and h, 30, every=0.1)
    first = _standby(server, "ready")
    os.kill(holder["pid"], signal.SIGSTOP)
    try:
        # The first standby had its weights: it takes over at once (under load in the test above);
        # the next one waits on the holder.
        answer = _admin(server, "/admin/handover")
        assert answer.status_code == 202, answer.text
        done = _handover(server, answer.json()["after"])
        assert [p["name"] for p in done["phases"]][0] == "standby taking over", done
        loading = _standby(server, "loading", not_pids=(first["pid"],))
        time.sleep(0.5)  # ten of the supervisor's looks: it stays loading
        assert _health(server)["supervisor"]["standby"] == loading

        load = Load(server.url, clients=4)
        time.sleep(1)
        answer = _admin(server, "/admin/handover")
        assert answer.status_code == 202, answer.text

        def waiting():
            record = _health(server)["supervisor"]
            return record["handovers"][-1] if record["handovers"][-1]["id"] > answer.json()["after"] else None

        running = until(waiting, 10, every=0.1)
        assert running["state"] == "running"
        assert [p["name"] for p in running["phases"]] == ["standby taking over once loaded"], running
        assert running["phases"][0]["pid"] == running["new_pid"] == loading["pid"]
        time.sleep(1)
        # Still waiting for it: the process that served before serves on, nothing else is forked.
        assert _health(server)["pid"] == first["pid"]
        assert [p["name"] for p in waiting()["phases"]] == ["standby taking over once loaded"]
    finally:
        os.kill(holder["pid"], signal.SIGCONT)
    done = _handover(server, answer.json()["after"])
    time.sleep(1)
    results = load.finish()
    assert results and not [r for r in results if r[0] != "ok"], results[:5]
    assert done["state"] == "done", done
    assert [p["name"] for p in done["phases"]] == [
        "standby taking over once loaded",
        "weights mapped",
        "new process serving",
        "old process draining",
        "old process gone",
    ], done
    assert done["new_pid"] == loading["pid"] and _health(server)["pid"] == loading["pid"]
    assert not _alive(first["pid"])
    assert server.log().count('"role": "standby"') == 3  # the first, the one that waited, the next
