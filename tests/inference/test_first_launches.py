"""The first launches made ahead (inference/first_launches.py): the attention shapes read from a
checkpoint's config, and the launches themselves, which must neither fail on the GPU nor touch the
process's random state."""

import logging

import pytest
import torch

from inference import first_launches
from inference.smoke_model import FULL_TEXT, FULL_VISION, SMOKE_TEXT, SMOKE_VISION


def config_dir(tmp_path, text, vision):
    from transformers import Glm4vConfig

    Glm4vConfig(text_config=dict(text), vision_config=dict(vision)).save_pretrained(tmp_path)
    return str(tmp_path)


def test_the_text_and_vision_attention_shapes_come_from_the_config(tmp_path):
    full = first_launches.attention_shapes(config_dir(tmp_path / "full", FULL_TEXT, FULL_VISION))
    assert full == [(32, 2, 128), (12, 12, 128)]  # GLM-4.6V-Flash: grouped text heads, plain vision heads
    smoke = first_launches.attention_shapes(config_dir(tmp_path / "smoke", SMOKE_TEXT, SMOKE_VISION))
    assert smoke == [(SMOKE_TEXT["num_attention_heads"], SMOKE_TEXT["num_key_value_heads"], 64), (2, 2, 16)]


@pytest.mark.parametrize(
    "text",
    ["not json", '{"text_config": 3}', '{"text_config": {"num_attention_heads": 3, "num_key_value_heads": 2}}'],
    ids=["not json", "not a section", "heads not grouped"],
)
def test_a_config_that_does_not_say_gives_no_shape(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    assert first_launches.attention_shapes(str(tmp_path)) == []
    assert first_launches.attention_shapes(str(tmp_path / "missing")) == []


def launches_cleanly(device: str, dtype, shapes, caplog) -> None:
    state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state() if device == "cuda" else None
    with caplog.at_level(logging.DEBUG, logger="inference.first_launches"):
        first_launches.launch(device, dtype, shapes)
    assert not caplog.records  # every launch accepted
    assert torch.equal(torch.random.get_rng_state(), state)
    if cuda_state is not None:
        assert torch.equal(torch.cuda.get_rng_state(), cuda_state)


def test_the_launches_run_on_a_cpu_and_leave_the_random_state_alone(caplog):
    launches_cleanly("cpu", torch.float32, [(4, 2, 64), (2, 2, 16)], caplog)


def test_a_launch_that_fails_is_logged_not_raised(caplog, monkeypatch):
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: 1 / 0)
    with caplog.at_level(logging.DEBUG, logger="inference.first_launches"):
        first_launches.launch("cpu", torch.float32, [(4, 2, 64)])
    (record,) = caplog.records
    assert "division by zero" in record.fields["why"]


@pytest.mark.gpu
def test_on_a_gpu_the_launches_of_the_real_shapes_all_run(caplog):
    launches_cleanly("cuda", torch.bfloat16, [(32, 2, 128), (12, 12, 128)], caplog)
