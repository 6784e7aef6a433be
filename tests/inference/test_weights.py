"""The prefetching weight reader: the same tensors as safetensors gives, the same model as
from_pretrained(path) builds, and clear failures (a GPU run too: pytest -m gpu)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from inference import weights
from inference.engine import Engine


@pytest.fixture(scope="module")
def sharded(smoke_model, tmp_path_factory):
    """The smoke checkpoint saved again as several shards with an index, like real checkpoints."""
    from transformers import Glm4vForConditionalGeneration

    path = tmp_path_factory.mktemp("sharded") / "model"
    model = Glm4vForConditionalGeneration.from_pretrained(smoke_model, dtype=torch.float32)
    model.save_pretrained(path, max_shard_size="300KB")
    for extra in smoke_model.iterdir():
        if not (path / extra.name).exists():
            shutil.copy(extra, path)
    return path


def reference(path) -> dict:
    state = {}
    for file in weights.shard_files(path):
        state.update(load_file(file))
    return state


def one_buffer(state: dict) -> bool:
    """Whether every tensor is a view of one buffer, each starting at an aligned byte."""
    storages = {tensor.untyped_storage().data_ptr() for tensor in state.values()}
    aligned = all(t.storage_offset() * t.element_size() % weights.ALIGN_BYTES == 0 for t in state.values())
    return len(storages) == 1 and aligned


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("chunk", [weights.CHUNK_BYTES, 4096, 1000])
@pytest.mark.parametrize("one_allocation", [False, True], ids=["each", "one-allocation"])
def test_reads_every_tensor_exactly(sharded, monkeypatch, device, chunk, one_allocation):
    # Small chunks split tensors across reads and put several tensors in one read.
    monkeypatch.setattr(weights, "CHUNK_BYTES", chunk)
    assert len(weights.shard_files(sharded)) > 2
    expected = reference(sharded)
    state = weights.read_state_dict(sharded, device, one_allocation)
    assert state.keys() == expected.keys()
    for name, tensor in expected.items():
        got = state[name]
        assert got.device.type == device and got.dtype == tensor.dtype and got.shape == tensor.shape, name
        assert torch.equal(got.cpu(), tensor), name
    # The weight holder's (one_allocation): one buffer, a process mapping it opens one handle; every
    # tensor at a boundary but a layer's k and v, which follow its q (the fused projection is their view).
    followers = tuple(f"{p}_proj.{kind}" for p in "kv" for kind in ("weight", "bias"))
    assert one_buffer({n: t for n, t in state.items() if not n.endswith(followers)}) == one_allocation


def test_other_dtypes_and_empty_tensors(tmp_path):
    tensors = {
        "bf16": torch.arange(12, dtype=torch.bfloat16).reshape(3, 4),
        "i64": torch.arange(5, dtype=torch.int64),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros((0, 4)),
        "f16": torch.full((7,), 0.5, dtype=torch.float16),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    for one_allocation in (False, True):
        state = weights.read_state_dict(tmp_path, "cpu", one_allocation)
        for name, tensor in tensors.items():
            assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
            assert state[name].shape == tensor.shape, name


def test_engine_builds_the_model_from_pretrained_builds(smoke_model):
    prefetched = Engine(str(smoke_model), "cpu", "float32", weight_loader="prefetch")
    prefetched.load()
    plain = Engine(str(smoke_model), "cpu", "float32", weight_loader="transformers")
    plain.load()
    assert "weights_read" in prefetched.load_phases and "weights_read" not in plain.load_phases
    assert prefetched.weights["built"] == "assembled" and plain.weights["built"] == "from_pretrained"
    assert not prefetched.model.training and prefetched.model.config.to_dict() == plain.model.config.to_dict()
    ours, theirs = prefetched.model.state_dict(), plain.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    buffers = dict(plain.model.named_buffers())
    assert all(torch.equal(buffer, buffers[name]) for name, buffer in prefetched.model.named_buffers())
    assert prefetched.model.generation_config.to_dict() == plain.model.generation_config.to_dict()
    assert prefetched.eos_ids == plain.eos_ids


def test_stored_dtype_converted_on_load(smoke_model):
    # The smoke checkpoint is stored in bfloat16; asked for float32, the model holds float32.
    stored = {tensor.dtype for tensor in reference(smoke_model).values() if tensor.is_floating_point()}
    engine = Engine(str(smoke_model), "cpu", "float32")
    engine.load()
    assert stored != {torch.float32}
    assert {p.dtype for p in engine.model.parameters()} == {torch.float32}


def test_checkpoint_without_safetensors_goes_to_from_pretrained(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    engine = Engine(str(tmp_path), "cpu", weight_loader="prefetch")
    assert engine._prefetch() is None
    with pytest.raises(weights.Unsupported, match="no safetensors checkpoint"):
        weights.shard_files(tmp_path)


def test_truncated_shard_fails_with_its_name(smoke_model, tmp_path):
    for extra in smoke_model.iterdir():
        shutil.copy(extra, tmp_path)
    shard = tmp_path / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(weights.Unsupported, match="model.safetensors ends before"):
        weights.Prefetch(tmp_path, "cpu").result()


def test_check_finds_a_shard_cut_short_or_grown_without_reading_it(smoke_model, tmp_path):
    for extra in smoke_model.iterdir():
        shutil.copy(extra, tmp_path)
    weights.check(tmp_path)  # whole
    shard = tmp_path / "model.safetensors"
    whole = shard.read_bytes()
    shard.write_bytes(whole[:-1])
    with pytest.raises(weights.Unsupported, match=f"end at byte {len(whole)}, the file at {len(whole) - 1}"):
        weights.check(tmp_path)
    shard.write_bytes(whole + b"\0")
    with pytest.raises(weights.Unsupported, match="model.safetensors: its tensors end"):
        weights.check(tmp_path)


def test_a_file_that_is_not_safetensors_is_refused_without_reading_what_its_first_bytes_claim(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint" * 64)
    with pytest.raises(weights.Unsupported, match="its header claims 7521891404167278446 bytes, the file has 1024"):
        weights.check(tmp_path)


def test_unknown_dtype_is_refused(tmp_path):
    header = json.dumps({"x": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0")
    with pytest.raises(weights.Unsupported, match="dtype F4"):
        weights.read_state_dict(tmp_path, "cpu")


def test_wrong_engine_setting_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="WEIGHT_LOADER must be one of prefetch, transformers"):
        Engine("/nowhere", weight_loader="mmap")
    monkeypatch.setenv("STEP_PDL", "on")  # read by the kernels: refused at start, not at the first step
    with pytest.raises(ValueError, match="STEP_PDL must be one of auto, off, not 'on'"):
        Engine("/nowhere")
