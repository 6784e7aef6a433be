"""The weight holder: a real holder process hands its tensors to another process, which maps them
(shared memory files on a CPU, CUDA IPC on a GPU: pytest -m gpu) without a copy of its own."""

import subprocess
import sys
import time

import pytest
import torch

from inference import holder, weights
from inference.model_runner import fuse_layer
from tests.conftest import ROOT


def start_holder(model, device: str, path, mode: str = "on") -> subprocess.Popen:
    args = ", ".join(repr(a) for a in (str(model), device, mode, str(path)))
    code = f"from inference import holder; raise SystemExit(holder.serve({args}))"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)


@pytest.fixture
def socket_path(tmp_path):
    return tmp_path / "weights.sock"


def _stop(process: subprocess.Popen) -> None:
    process.kill()  # it ignores SIGTERM: model processes may still map its weights
    process.wait(10)


def _wait_bound(path, process) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_a_process_maps_the_holders_weights_without_a_copy(smoke_model, socket_path, device):
    process = start_holder(smoke_model, device, socket_path)
    try:
        _wait_bound(socket_path, process)
        before = torch.cuda.memory_allocated() if device == "cuda" else 0
        mapped = holder.Mapped(str(socket_path), timeout=120)
        state = mapped.result()
        expected = weights.read_state_dict(smoke_model, "cpu")
        assert state.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(state[name].cpu(), tensor), name
        assert mapped.holder_pid == process.pid and mapped.held_bytes >= sum(
            t.numel() * t.element_size() for t in expected.values()
        )
        first = next(iter(state.values()))
        assert first.device.type == device
        if device == "cuda":
            assert torch.cuda.memory_allocated() == before  # mapped, not allocated here
        else:
            assert all(t.is_shared() for t in state.values())
        # Held as one allocation: one handle (CUDA IPC) or one shared memory file (CPU) to map, not one each.
        assert len({t.untyped_storage().data_ptr() for t in state.values() if t.numel()}) == 1
        # Asked again (as by the next model process), the holder gives the same tensors.
        again = holder.Mapped(str(socket_path), timeout=120).result()
        assert all(torch.equal(again[name], state[name]) for name in state)
    finally:
        _stop(process)


@pytest.mark.parametrize("one_allocation", [False, True], ids=["each", "one-allocation"])
def test_q_k_v_read_side_by_side_are_fused_without_a_copy(smoke_model, one_allocation):
    from safetensors.torch import load_file
    from transformers import AutoConfig, Glm4vForConditionalGeneration

    config = AutoConfig.from_pretrained(smoke_model)

    def first_layer(state):
        model = Glm4vForConditionalGeneration.from_pretrained(None, config=config, state_dict=state)
        layer = model.model.language_model.layers[0]
        return layer, fuse_layer(layer)

    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    read = weights.read_state_dict(smoke_model, "cpu", one_allocation)
    layer, fused = first_layer(dict(read))
    q, k, v = (getattr(layer.self_attn, f"{p}_proj") for p in "qkv")
    assert fused.qkv_weight.data_ptr() == read[name].data_ptr()  # the reader's layout, used as it is
    assert fused.qkv_bias.data_ptr() == read[name.replace("weight", "bias")].data_ptr()
    assert torch.equal(fused.qkv_weight, torch.cat([q.weight, k.weight, v.weight]))

    # Tensors each on their own (as safetensors loads them) are concatenated into a new one.
    plain = load_file(smoke_model / "model.safetensors")
    layer, copied = first_layer(dict(plain))
    assert copied.qkv_weight.data_ptr() != plain[name].data_ptr()
    assert torch.equal(copied.qkv_weight, fused.qkv_weight)


def test_a_holder_that_cannot_read_says_why_and_nobody_waits(tmp_path, socket_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    process = start_holder(broken, "cpu", socket_path)
    try:
        _wait_bound(socket_path, process)
        with pytest.raises(holder.Unavailable, match="could not read the weights"):
            holder.Mapped(str(socket_path), timeout=60).result()
        assert process.wait(30) == 1
    finally:
        if process.poll() is None:
            _stop(process)
    with pytest.raises(holder.Unavailable, match="did not answer"):
        holder.Mapped(str(socket_path), timeout=5).result()  # nobody there now


def test_auto_holds_nothing_on_a_cpu(smoke_model, socket_path):
    process = start_holder(smoke_model, "cpu", socket_path, mode="auto")
    assert process.wait(60) == 0
    assert not holder.wanted("auto", "cpu") and holder.wanted("auto", "cuda") and holder.wanted("on", "cpu")
    assert not holder.wanted("off", "cuda")
