"""inference.assembly: the model around a state dict that is already its weights, the same model
from_pretrained builds; anything it cannot take as it is goes to from_pretrained, saying why."""

import json
import logging
import shutil

import pytest
import torch
from transformers import Glm4vForConditionalGeneration

from inference import assembly, weights
from inference.engine import Engine


@pytest.fixture(scope="module")
def loaded(smoke_model):
    """(the checkpoint's path, the stored state, from_pretrained's model) of the smoke checkpoint."""
    reference = Glm4vForConditionalGeneration.from_pretrained(smoke_model, dtype=torch.float32).eval()
    return str(smoke_model), weights.read_state_dict(smoke_model, "cpu"), reference


@pytest.fixture
def nothing_ahead(monkeypatch):
    monkeypatch.setattr(assembly, "_ahead", {})


@pytest.mark.parametrize("ahead", [False, True], ids=["built", "built ahead"])
def test_the_assembled_model_is_the_one_from_pretrained_builds(loaded, nothing_ahead, ahead):
    path, state, reference = loaded
    state = {name: tensor.float() for name, tensor in state.items()}
    skeleton = None
    if ahead:
        assert assembly.build_ahead(Glm4vForConditionalGeneration, path)
        skeleton = assembly._ahead[Glm4vForConditionalGeneration, path][1]
    model, why, inherited = assembly.assemble(Glm4vForConditionalGeneration, path, dict(state), torch.float32, "cpu")
    assert why == "" and not model.training and inherited == ahead
    assert (model is skeleton) == ahead
    ours = model.state_dict()
    assert ours.keys() == reference.state_dict().keys()
    # The state's own tensors, not copies.
    assert all(ours[name].data_ptr() == tensor.data_ptr() for name, tensor in state.items())
    buffers = dict(reference.named_buffers())
    assert {name: b.dtype for name, b in model.named_buffers()} == {name: b.dtype for name, b in buffers.items()}
    assert all(torch.equal(buffer, buffers[name]) for name, buffer in model.named_buffers())
    assert model.config.to_dict() == reference.config.to_dict()
    ids = torch.tensor([[5, 17, 99, 3, 250, 41]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_a_state_in_another_dtype_is_cast_as_from_pretrained_casts(loaded):
    path, state, reference = loaded
    assert {t.dtype for t in state.values()} == {torch.bfloat16}  # as the smoke checkpoint is stored
    model, why, _ = assembly.assemble(Glm4vForConditionalGeneration, path, dict(state), torch.float32, "cpu")
    assert why == "" and {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(torch.equal(p, reference.state_dict()[name]) for name, p in model.state_dict().items())


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda s: s.pop("lm_head.weight"), "the state's names are not the model's (1 missing, 0 unexpected)"),
        (lambda s: s.update(extra=torch.zeros(1)), "the state's names are not the model's (0 missing, 1 unexpected)"),
        (lambda s: s.update({"lm_head.weight": s["lm_head.weight"][:-1]}), "lm_head.weight is"),
        (lambda s: s.update({"lm_head.weight": s["lm_head.weight"].to("meta")}), "lm_head.weight is on meta"),
    ],
    ids=["missing", "unexpected", "shape", "device"],
)
def test_a_state_that_is_not_the_models_goes_to_from_pretrained(loaded, change, reason):
    path, state, _ = loaded
    state = dict(state)
    change(state)
    model, why, inherited = assembly.assemble(Glm4vForConditionalGeneration, path, state, torch.bfloat16, "cpu")
    assert model is None and why.startswith(reason) and not inherited


def test_a_skeleton_built_ahead_serves_one_model_of_the_config_it_was_built_from(smoke_model, tmp_path, nothing_ahead):
    """The supervisor's skeleton is taken by the first model a process builds (a second one builds its
    own rather than filling one filled already), and only while config.json is what it was built from."""
    shutil.copytree(smoke_model, tmp_path / "model")
    path = str(tmp_path / "model")
    state = weights.read_state_dict(path, "cpu")
    assert assembly.build_ahead(Glm4vForConditionalGeneration, path)
    assert not assembly.build_ahead(Glm4vForConditionalGeneration, path)  # the same config: kept
    first, _, inherited = assembly.assemble(Glm4vForConditionalGeneration, path, dict(state), torch.bfloat16, "cpu")
    second, _, again = assembly.assemble(Glm4vForConditionalGeneration, path, dict(state), torch.bfloat16, "cpu")
    assert inherited and not again and second is not first

    assert assembly.build_ahead(Glm4vForConditionalGeneration, path)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 2e-5
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    model, why, inherited = assembly.assemble(Glm4vForConditionalGeneration, path, dict(state), torch.bfloat16, "cpu")
    assert why == "" and not inherited
    assert model.config.text_config.rms_norm_eps == 2e-5  # the config as it is now


def test_the_engine_builds_a_checkpoint_with_tied_embeddings_by_from_pretrained(smoke_model, tmp_path, caplog):
    for item in smoke_model.iterdir():
        shutil.copy(item, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    engine = Engine(str(tmp_path), "cpu", "float32", weight_loader="prefetch")
    with caplog.at_level(logging.INFO, logger="inference.engine"):
        engine.load()
    assert engine.weights["built"] == "from_pretrained"
    [record] = [r for r in caplog.records if r.getMessage() == "the model is built by from_pretrained"]
    assert record.fields["reason"] == "the checkpoint ties its input and output embeddings"
    theirs = Glm4vForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(engine.model.lm_head.weight, theirs.lm_head.weight)  # whatever from_pretrained made of it
