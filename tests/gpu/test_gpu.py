"""The real GPU path: NVML figures, CUDA allocator stats, soft reset and drain on a GPU.

Run on a machine with an NVIDIA GPU: python -m pytest -m gpu tests/gpu
"""

import signal
import time

import httpx
import pytest

from console.host import gpu
from tests.inference.helpers import chat, image_url

pytestmark = pytest.mark.gpu


@pytest.fixture
def gpu_server(start_server):
    if not gpu.nvml_available():
        pytest.fail(f"no GPU here ({gpu.nvml_error()}): run the gpu tests on the GPU machine")
    return start_server(DEVICE="cuda")


def test_nvml_sees_the_devices_and_the_server_process(gpu_server):
    devices = gpu.devices()
    assert devices and devices[0].total_bytes > 8 * 2**30
    assert 0 < devices[0].used_bytes <= devices[0].total_bytes
    assert devices[0].utilisation is not None
    held = {p.pid: p.used_bytes for p in gpu.processes()}
    assert gpu_server.proc.pid in held, held
    assert held[gpu_server.proc.pid] > 0


def test_image_request_and_allocator_figures(gpu_server):
    response = httpx.post(gpu_server.url + "/v1/chat/completions", json=chat("Describe.", [image_url()]), timeout=120)
    assert response.status_code == 200, response.text
    health = httpx.get(gpu_server.url + "/health").json()
    assert health["device"].startswith("cuda") and health["dtype"] == "bfloat16"
    allocator = health["allocator"]
    assert allocator["allocated_bytes"] > 0
    assert allocator["reserved_bytes"] >= allocator["allocated_bytes"]
    assert 0 <= allocator["fragmentation"] < 1
    assert "inference_torch_reserved_bytes" in httpx.get(gpu_server.url + "/metrics").text


def test_a_ready_server_records_its_decoding_steps_of_every_batch_size_while_idle(gpu_server):
    """Ready with the warm-up's one-row step recorded; the scheduler, idle, records the others while the
    server answers (its /health asked meanwhile)."""
    from inference.model_runner import buckets

    deadline = time.monotonic() + 30
    while (decoder := httpx.get(gpu_server.url + "/health").json()["decoder"])["cuda_graphs"] < len(
        buckets(decoder["slots"], 1)
    ):
        assert time.monotonic() < deadline, decoder
        time.sleep(0.02)
    assert "could not be recorded" not in gpu_server.log()
    response = httpx.post(gpu_server.url + "/v1/chat/completions", json=chat("Hello."), timeout=120)
    assert response.status_code == 200, response.text


def test_soft_reset_returns_cached_blocks(gpu_server):
    for size in (112, 448, 224, 672):  # varied shapes leave cached blocks behind
        httpx.post(gpu_server.url + "/v1/chat/completions", json=chat("x", [image_url(size, size)]), timeout=120)
    before = httpx.get(gpu_server.url + "/health").json()["allocator"]
    reset = httpx.post(
        gpu_server.url + "/admin/soft-reset", headers={"Authorization": f"Bearer {gpu_server.token}"}, timeout=60
    ).json()
    assert reset["reserved_after"] <= reset["reserved_before"]
    assert reset["reserved_after"] <= before["reserved_bytes"]
    assert httpx.get(gpu_server.url + "/health/ready").status_code == 200


def test_sigterm_exits_zero_and_gpu_memory_is_released(gpu_server):
    pid = gpu_server.proc.pid
    gpu_server.proc.send_signal(signal.SIGTERM)
    assert gpu_server.proc.wait(60) == 0
    deadline = time.monotonic() + 20
    while any(p.pid == pid for p in gpu.processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(p.pid == pid for p in gpu.processes())


def test_sampler_maps_the_servers_gpu_memory_to_its_instance(gpu_server):
    # The sampler's NVML snapshot, as the host worker takes it each round.
    snapshot = gpu.Snapshot()
    assert snapshot.available and not snapshot.error
    mine = snapshot.for_instance([0], [gpu_server.proc.pid])
    assert mine["gpu_used"] > 0 and mine["gpu_total"] > mine["gpu_used"]
    assert any(p["pid"] == gpu_server.proc.pid and p["ours"] for p in mine["processes"])
    stranger = snapshot.for_instance([0], [1])  # pid 1 holds no GPU memory
    assert stranger["gpu_used"] == 0
    assert any(p["pid"] == gpu_server.proc.pid and not p["ours"] for p in stranger["processes"])
    assert mine["devices"][0]["util"] is not None and mine["devices"][0]["total"] == mine["gpu_total"]


def test_the_host_snapshot_names_the_instance_holding_each_gpu_process(gpu_server):
    # What a host's report stores (Host.gpus): every device, each process named by its instance.
    devices = gpu.Snapshot().for_host({gpu_server.proc.pid: "gpu-instance"})
    assert devices and all(d["total"] > 0 and d["name"] for d in devices)
    held = [p for d in devices for p in d["processes"] if p["pid"] == gpu_server.proc.pid]
    assert held and held[0]["instance"] == "gpu-instance" and held[0]["used"] > 0


def test_supervised_restart_on_the_gpu_frees_the_old_process_memory(start_server):
    """The supervisor imports torch without starting CUDA; each forked model process has its own."""
    server = start_server(module="inference.supervisor", DEVICE="cuda")
    assert not any(p.pid == server.proc.pid for p in gpu.processes())  # the supervisor holds no GPU memory
    first = httpx.get(server.url + "/health").json()["pid"]
    assert any(p.pid == first and p.used_bytes > 0 for p in gpu.processes())
    answer = httpx.post(server.url + "/admin/restart", headers={"Authorization": f"Bearer {server.token}"})
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 120
    health = {}
    while time.monotonic() < deadline:
        try:
            health = httpx.get(server.url + "/health", timeout=5).json()
            if health["pid"] != first and health["state"] == "ready":
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    assert health.get("pid") != first and health.get("state") == "ready", server.log()[-3000:]
    holders = {p.pid for p in gpu.processes()}
    assert first not in holders and health["pid"] in holders
    assert health["device"].startswith("cuda")
    response = httpx.post(server.url + "/v1/chat/completions", json=chat("Describe.", [image_url()]), timeout=120)
    assert response.status_code == 200, response.text
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0


def test_handover_on_the_gpu_under_load_refuses_nobody_and_frees_the_old_process(start_server):
    """Two model processes on the GPU for a moment (the new one checked its room with
    cudaMemGetInfo), then the old one gone with its memory."""
    from tests.inference.test_handover import handover_under_load

    server = start_server(module="inference.supervisor", DEVICE="cuda", DRAIN_TIMEOUT=30)
    first = httpx.get(server.url + "/health").json()["pid"]
    done = handover_under_load(server)
    assert done["state"] == "done", done
    deadline = time.monotonic() + 20
    while first in {p.pid for p in gpu.processes()} and time.monotonic() < deadline:
        time.sleep(0.2)
    holders = {p.pid for p in gpu.processes()}
    assert first not in holders and done["new_pid"] in holders
    health = httpx.get(server.url + "/health").json()
    assert health["pid"] == done["new_pid"] and health["device"].startswith("cuda")
    # The weights stayed in the holder (HOLD_WEIGHTS=auto on a GPU) and the new process mapped them
    # (that mapping adds nothing to a process's allocator: tests/inference/test_holder.py).
    held = health["supervisor"]["holder"]
    assert held["state"] == "holding" and held["pid"] in holders, held
    assert health["weights"]["source"] == "holder" and health["weights"]["holder_pid"] == held["pid"]
    assert health["weights"]["built"] == "assembled"  # the mapped tensors taken as they are
    assert "weights mapped" in [p["name"] for p in done["phases"]]
    # The first process checked the Triton kernels against the eager step; the new one, on the same
    # device and shapes, skipped that check and runs them.
    assert health["decoder"]["kernels"] == "triton"
    assert server.log().count('"check_s"') == 1 and server.log().count('"checked": "by an earlier process"') == 1


def test_a_standby_on_the_gpu_takes_the_handover_and_the_old_process_memory_is_freed(start_server):
    """HANDOVER_STANDBY: a second model process loaded on the GPU ahead (its own KV cache, context and
    graphs, the held weights mapped), which serves at once at the handover; the old one's memory freed,
    and a new standby on the GPU beside the new serving process."""
    from tests.inference.test_handover import handover_under_load
    from tests.inference.test_standby import _standby

    server = start_server(module="inference.supervisor", DEVICE="cuda", DRAIN_TIMEOUT=30, HANDOVER_STANDBY="1")
    first = httpx.get(server.url + "/health").json()
    standby = _standby(server, "ready", timeout=180)
    used = {p.pid: p.used_bytes for p in gpu.processes()}
    assert used.get(standby["pid"], 0) > 0, used
    done = handover_under_load(server)
    assert done["state"] == "done", done
    assert [p["name"] for p in done["phases"]][:2] == ["standby taking over", "new process serving"], done
    assert done["new_pid"] == standby["pid"]
    deadline = time.monotonic() + 20
    while first["pid"] in {p.pid for p in gpu.processes()} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first["pid"] not in {p.pid for p in gpu.processes()}
    health = httpx.get(server.url + "/health").json()
    assert health["pid"] == standby["pid"] and health["decoder"]["cuda_graphs"] > 0
    assert health["weights"]["source"] == "holder"
    following = _standby(server, "ready", not_pids=(standby["pid"],), timeout=180)
    assert following["pid"] in {p.pid for p in gpu.processes()}
    response = httpx.post(server.url + "/v1/chat/completions", json=chat("Describe.", [image_url()]), timeout=120)
    assert response.status_code == 200, response.text


def test_a_handover_with_room_for_fewer_kv_cache_slots_grows_back_on_the_gpu(start_server, smoke_model):
    """The new process counts its KV cache against the GPU's free memory (capped here so that two
    of four slots fit); it serves with two, then grows to four with its graphs recorded again."""
    from inference import handover
    from tests.inference.test_handover import handover_under_load

    slot = handover.kv_slot_bytes(str(smoke_model), 4096, 2)  # bfloat16 on a GPU
    reserve = 256 * 2**20
    server = start_server(
        module="inference.supervisor",
        DEVICE="cuda",
        MAX_CONCURRENCY="4",
        MAX_CONTEXT="4096",
        HANDOVER_RESERVE_BYTES=str(reserve),
        HANDOVER_MAX_BYTES=str(reserve + int(2.5 * slot)),  # the weights are held: not counted again
    )
    done = handover_under_load(server)
    assert done["state"] == "done", done
    smaller = [p for p in done["phases"] if p["name"] == "smaller kv cache"]
    assert smaller and (smaller[0]["slots"], smaller[0]["wanted"]) == (2, 4), done["phases"]
    # Grown, then the decoding steps of every batch size recorded again for the new cache (the scheduler idle).
    deadline = time.monotonic() + 30
    while (decoder := httpx.get(server.url + "/health").json()["decoder"])["cuda_graphs"] < 3 or decoder["slots"] != 4:
        assert time.monotonic() < deadline, (decoder, server.log()[-6000:])
        time.sleep(0.2)
    assert decoder["kv_cache_bytes"] == 4 * slot and "could not be recorded" not in server.log()
    response = httpx.post(server.url + "/v1/chat/completions", json=chat("Describe.", [image_url()]), timeout=120)
    assert response.status_code == 200, response.text
