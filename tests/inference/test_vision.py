"""The vision encoder prepared once per image grid (inference/vision.py) against the model's own, on the
smoke model: the same features, the same text-layer inputs, and the model's own encoder whenever
this one fails or disagrees; on a GPU, each grid's pass recorded as a CUDA graph and replayed."""

import logging
from functools import partial

import pytest
import torch

from inference import vision as vision_module
from inference.engine import Engine
from inference.vision import ImageGrids, VisionEncoder
from tests.inference.test_batching import PROMPTS, engine_pair, images, messages, run


@pytest.fixture(scope="module")
def engine(smoke_model) -> Engine:
    engine = Engine(str(smoke_model), "cpu", "float32", decoder="batched", slots=2, context=512)
    engine.load()
    return engine


def image_inputs(engine: Engine, sizes: list[tuple[int, int]], shade: int = 0) -> dict:
    pictures = [pic.resize(size) for pic, size in zip(images(len(sizes)), sizes, strict=True)]
    if shade:
        pictures = [pic.point(lambda v: (v + shade) % 256) for pic in pictures]
    return engine.prepare(messages("what is it", len(sizes)), pictures, 1 << 20).inputs


def own_features(runner, inputs: dict):
    model = runner.model.model
    return torch.cat(model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output)


@pytest.mark.parametrize("sizes", [[(112, 84)], [(112, 84), (140, 196)]], ids=["one image", "two grids"])
def test_features_equal_the_models_own_encoder(engine, sizes):
    runner = engine.decoding.runner
    inputs = image_inputs(engine, sizes)
    grids = ImageGrids.of(inputs["image_grid_thw"])
    with torch.inference_mode():
        ours = runner.vision.features(inputs["pixel_values"], inputs["image_grid_thw"])
        assert torch.equal(ours, own_features(runner, inputs))
        prepared = runner.vision.prepared[grids]
        # Other pixels on the same grid: its preparation is reused, the features are still the model's.
        other = image_inputs(engine, sizes, shade=97)
        assert not torch.equal(other["pixel_values"], inputs["pixel_values"])
        again = runner.vision.features(other["pixel_values"], other["image_grid_thw"])
        assert runner.vision.prepared[grids] is prepared
        assert torch.equal(again, own_features(runner, other))
        assert not torch.equal(again, ours)
    assert not runner.vision.wanted  # nothing is graphed on a CPU: no grid waits for a recording


def test_the_text_layers_get_the_inputs_the_models_own_forward_gives_them(engine):
    runner = engine.decoding.runner
    inputs = image_inputs(engine, [(112, 84), (140, 196)])
    with torch.inference_mode():
        given = runner.vision.inputs(dict(inputs))
        assert "pixel_values" not in given  # the features computed here
        embeds, positions = runner._embed(given)
        own_embeds, own_positions = runner._embed(dict(inputs))  # the model's own encoder and positions
        # The M-RoPE positions computed on the host before the prompt reaches the decoder's thread.
        hosted = runner.with_positions(dict(inputs))
        assert hosted["position_ids"].device.type == "cpu"
        _, hosted_positions = runner._embed(runner.vision.inputs(hosted))
    assert torch.equal(embeds, own_embeds) and torch.equal(positions, own_positions)
    assert torch.equal(hosted_positions, own_positions)
    assert hosted["rope_delta"] == int(own_positions.max()) + 1 - inputs["input_ids"].shape[1]
    # Grids that do not match the prompt's image tokens: left to the model's forward, which refuses them.
    assert "position_ids" not in runner.with_positions({**inputs, "image_grid_thw": inputs["image_grid_thw"][:1]})


def _features(given: dict):
    return given["mm_encoder_outputs"]["image"].pooler_output[0]


def test_images_of_prompts_prefilled_together_are_encoded_in_one_pass(engine, monkeypatch):
    """Prompts without a graph for their grids: one pass over their images, each prompt given its own
    features (the model's own, as when encoded alone); a text prompt among them is left as it is, and
    a pass stops short of `most_together` patches, the rest going into the next."""
    runner = engine.decoding.runner
    encoder = VisionEncoder(runner.vision.visual, None)
    prompts = [
        image_inputs(engine, [(112, 84)]),
        engine.prepare(messages("no picture", 0), [], 1 << 20).inputs,
        image_inputs(engine, [(112, 84), (140, 196)], shade=40),
        image_inputs(engine, [(196, 140)], shade=80),
    ]
    passes = []
    encode = VisionEncoder.encode
    monkeypatch.setattr(
        VisionEncoder,
        "encode",
        lambda self, pixels, prepared: passes.append(prepared.patches) or encode(self, pixels, prepared),
    )
    with torch.inference_mode():
        encoder.inputs(dict(prompts[0]))  # the first image is checked against the model's own, alone
        passes.clear()
        asked = [dict(p) for p in prompts]
        given = encoder.inputs_many(asked)
        patches = [int(p["image_grid_thw"].prod(-1).sum()) for i, p in enumerate(prompts) if i != 1]
        assert passes == [sum(patches)] and encoder.together == 3
        assert given[1] is asked[1]
        for i in (0, 2, 3):
            assert "pixel_values" not in given[i]
            torch.testing.assert_close(_features(given[i]), own_features(runner, prompts[i]), rtol=1e-5, atol=1e-6)

        passes.clear()
        encoder.most_together = patches[0] + patches[1]
        again = encoder.inputs_many([dict(p) for p in prompts])
        assert passes == [patches[0] + patches[1], patches[2]] and encoder.together == 5  # the last alone
        for i in (0, 2, 3):
            torch.testing.assert_close(_features(again[i]), _features(given[i]), rtol=1e-5, atol=1e-6)


def test_a_pass_of_several_prompts_that_fails_gives_way_to_one_prompt_a_pass(engine, monkeypatch, caplog):
    runner = engine.decoding.runner
    encoder = VisionEncoder(runner.vision.visual, None)
    prompts = [image_inputs(engine, [(112, 84)]), image_inputs(engine, [(140, 196)], shade=40)]

    def broken(cls, parts):
        raise RuntimeError("cannot join")

    monkeypatch.setattr(vision_module.Prepared, "joined", classmethod(broken))
    with caplog.at_level(logging.ERROR, logger="inference.vision"), torch.inference_mode():
        encoder.inputs(dict(prompts[0]))
        given = encoder.inputs_many([dict(p) for p in prompts])
        for one, inputs in zip(given, prompts, strict=True):
            assert torch.equal(_features(one), own_features(runner, inputs))
    assert "could not be encoded together" in caplog.text
    assert not encoder.joining and encoder.together == 0 and encoder.visual is not None  # alone, as before


def test_a_failing_or_disagreeing_encoder_gives_way_to_the_models_own(smoke_model, monkeypatch, caplog):
    """The same answers either way; the failure is logged, and the model's own encoder runs from then on."""
    reference, batched = engine_pair(smoke_model, "cpu", "eager")
    expected = run(reference, [PROMPTS[0]])[0].ids
    vision = batched.decoding.runner.vision
    encode = type(vision).encode
    monkeypatch.setattr(type(vision), "encode", lambda self, pixels, prepared: -encode(self, pixels, prepared))
    with caplog.at_level(logging.ERROR, logger="inference.vision"):
        assert run(batched, [PROMPTS[0]])[0].ids == expected
    assert "disagrees with the model's own" in caplog.text and vision.visual is None
    assert batched.decoding.stats()["vision_graphs"] is None and batched.decoding.stats()["vision_kernels"] is None

    batched = Engine(str(smoke_model), "cpu", "float32", decoder="batched", slots=3, context=512)
    batched.load()
    vision = batched.decoding.runner.vision

    def broken(self, pixels, prepared):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(type(vision), "encode", broken)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="inference.vision"):
        assert run(batched, [PROMPTS[0], PROMPTS[3]])[0].ids == expected
    assert "the vision encoder failed here" in caplog.text and vision.visual is None


@pytest.mark.parametrize("sizes", [[(112, 84)], [(112, 84), (140, 196)]], ids=["one image", "two grids"])
def test_the_triton_kernels_give_the_models_own_features(engine, sizes):
    """The small work as inference/ops/vision_block.py's kernels (here in Triton's interpreter)."""
    from inference.ops import vision_block

    encoder = VisionEncoder(engine.decoding.runner.vision.visual, None, vision_block)
    assert encoder.kernels is vision_block
    inputs = image_inputs(engine, sizes)
    with torch.inference_mode():
        ours = encoder.features(inputs["pixel_values"], inputs["image_grid_thw"])
        torch.testing.assert_close(ours, own_features(engine.decoding.runner, inputs), rtol=1e-5, atol=1e-6)
    assert encoder.checked and encoder.runs == "triton"


@pytest.mark.parametrize("fault", ["disagree", "fail"])
def test_failing_or_disagreeing_kernels_give_way_to_the_encoders_modules(engine, fault, monkeypatch, caplog):
    """That image gets the model's own encoder; the next ones the modules, prepared and graphed as before."""
    from inference.ops import vision_block

    def broken(gate, up):
        if fault == "fail":
            raise RuntimeError("no such kernel")
        return -up

    runner = engine.decoding.runner
    monkeypatch.setattr(vision_block, "silu_mul", broken)
    encoder = VisionEncoder(runner.vision.visual, None, vision_block)
    inputs = image_inputs(engine, [(112, 84)])
    with caplog.at_level(logging.ERROR, logger="inference.vision"), torch.inference_mode():
        assert "pixel_values" in encoder.inputs(dict(inputs))  # this image: the model's own encoder
        assert encoder.runs == "modules"
        assert "Triton kernels" in caplog.text
        features = encoder.inputs(dict(inputs))["mm_encoder_outputs"]["image"].pooler_output[0]
        assert torch.equal(features, own_features(runner, inputs))
    assert encoder.checked


@pytest.mark.gpu
def test_each_grid_is_recorded_once_wanted_and_replays_what_it_computes_eagerly(smoke_model):
    reference, batched = engine_pair(smoke_model, "cuda", "auto")
    runner = batched.decoding.runner
    vision = runner.vision
    assert vision.kernels is not None  # the recorded passes run the Triton kernels
    expected = run(reference, [PROMPTS[0]])[0].ids
    assert run(batched, [PROMPTS[0]])[0].ids == expected  # eagerly: the grid is wanted
    assert len(vision.wanted) == 1 and not vision.graphs and runner.graphs_wanted
    runner.record_wanted()  # as the scheduler does when idle
    assert len(vision.graphs) == 1 and not vision.wanted
    replays = vision.replays
    assert run(batched, [PROMPTS[0]])[0].ids == expected
    assert vision.replays == replays + 1

    with torch.inference_mode():
        first, second = image_inputs(batched, [(112, 84)], shade=50), image_inputs(batched, [(140, 196)], shade=9)
        for inputs in (first, second):
            inputs = {key: value.to("cuda") for key, value in inputs.items()}
            grids = ImageGrids.of(inputs["image_grid_thw"])
            eager = vision.encode(inputs["pixel_values"].to(vision.visual.dtype), vision._prepare(grids))
            if grids not in vision.graphs:
                vision.features(inputs["pixel_values"], inputs["image_grid_thw"])
                assert vision.wanted[grids] > 0
                vision.record(grids)
            replayed = vision.features(inputs["pixel_values"], inputs["image_grid_thw"])
            torch.testing.assert_close(replayed, eager)
            assert torch.equal(replayed, vision.graphs[grids][2])
        assert len(vision.graphs) == 2
        # The first grid's graph again, after the second's replay in the same pool: still its own answer.
        inputs = {key: value.to("cuda") for key, value in first.items()}
        again = vision.features(inputs["pixel_values"], inputs["image_grid_thw"])
        torch.testing.assert_close(again, own_features(runner, inputs), rtol=1e-4, atol=1e-4)
    stats = batched.decoding.stats()
    assert stats["vision_graphs"] == 2 and stats["vision_graph_replays"] == vision.replays
    assert stats["vision_kernels"] == "triton"


@pytest.mark.gpu
def test_on_a_gpu_images_encoded_together_are_those_encoded_alone_and_graphed_grids_replay(smoke_model):
    """The Triton kernels' pass over the images of several prompts gives each prompt the features of
    its own pass; a prompt whose grid has a graph replays it instead of joining the pass."""
    _, batched = engine_pair(smoke_model, "cuda", "auto")
    vision = batched.decoding.runner.vision
    assert vision.kernels is not None and vision.most_together == vision_module.TOGETHER_PATCHES
    sizes = [[(112, 84)], [(140, 196)], [(196, 140), (112, 84)]]
    prompts = [
        {key: value.to("cuda") for key, value in image_inputs(batched, size, shade=20 * i).items()}
        for i, size in enumerate(sizes)
    ]
    with torch.inference_mode():
        alone = [_features(vision.inputs(dict(p))) for p in prompts]  # the first checks the encoder
        assert vision.checked
        joined, replays = vision.together, vision.replays
        together = [_features(given) for given in vision.inputs_many([dict(p) for p in prompts])]
        assert vision.together == joined + 3
        for one, other in zip(alone, together, strict=True):
            torch.testing.assert_close(other, one, rtol=1e-5, atol=1e-5)
        grids = ImageGrids.of(prompts[1]["image_grid_thw"])
        vision.record(grids)
        again = [_features(given) for given in vision.inputs_many([dict(p) for p in prompts])]
        assert vision.together == joined + 5 and vision.replays == replays + 1  # the graphed one alone
        for one, other in zip(alone, again, strict=True):
            torch.testing.assert_close(other, one, rtol=1e-5, atol=1e-5)


def test_the_preparations_kept_are_bounded_by_their_patches(engine, monkeypatch):
    vision = engine.decoding.runner.vision
    vision.prepared.clear()
    grids = [ImageGrids([(1, 6, 8)]), ImageGrids([(1, 8, 8)]), ImageGrids([(1, 10, 8)])]
    monkeypatch.setattr("inference.vision.PREPARED_PATCHES", 48 + 64)
    with torch.inference_mode():
        kept = vision._prepare(grids[0])
        vision._prepare(grids[1])
        assert vision._prepare(grids[0]) is kept  # used again: now the most recent
        vision._prepare(grids[2])  # 80 patches: the least recently used (8 x 8) goes, then 6 x 8 too
    assert list(vision.prepared) == [grids[2]]
    monkeypatch.setattr("inference.vision.VISION_GRAPH_PATCHES", 40)
    with torch.inference_mode():
        assert vision._prepare(grids[0]).patches == 48
    assert grids[0] not in vision.prepared  # larger than any graph: computed each time, not kept


def test_grids_waiting_for_a_recording_are_bounded_keeping_those_that_cost_most(engine, monkeypatch):
    """Images of ever new sizes on a server never idle: the grids waiting for a graph stay few."""
    from inference.vision import VisionEncoder

    def no_recording(run):
        raise AssertionError("nothing is recorded here")

    vision = VisionEncoder(engine.decoding.runner.vision.visual, no_recording)
    vision.checked = True
    costly, cheap = ImageGrids([(1, 6, 6)]), ImageGrids([(1, 6, 10)])
    vision.wanted = {costly: 10.0, cheap: 0.0}
    monkeypatch.setattr("inference.vision.WANTED", 2)
    inputs = image_inputs(engine, [(112, 84)])
    with torch.inference_mode():
        vision.features(inputs["pixel_values"], inputs["image_grid_thw"])
    new = ImageGrids.of(inputs["image_grid_thw"])
    assert set(vision.wanted) == {costly, new} and vision.wanted[new] > 0


def test_an_earlier_processs_check_is_not_made_again(engine, tmp_path, monkeypatch):
    """Under a supervisor the first image's check against the model's own encoder is noted beside its
    record; an encoder of a later process covering the same (torch, device, shapes, what runs) skips
    it; one that would run something else checks."""
    from inference import handover
    from inference.ops import vision_block

    monkeypatch.setenv(handover.STATE_ENV, str(tmp_path / "record.json"))
    runner = engine.decoding.runner
    own_runs = []
    visual = runner.vision.visual
    forward = type(visual).forward
    monkeypatch.setattr(type(visual), "forward", lambda self, *a, **k: own_runs.append(1) or forward(self, *a, **k))
    note_for = partial(runner.check_note, handover.VISION_CHECKED_SUFFIX)
    inputs = image_inputs(engine, [(112, 84)])
    with torch.inference_mode():
        first = VisionEncoder.of(runner.model, None, vision_block, note_for)
        assert not first.checked
        first.features(inputs["pixel_values"], inputs["image_grid_thw"])
        assert first.checked and len(own_runs) == 1
        noted = (tmp_path / f"record.json{handover.VISION_CHECKED_SUFFIX}").read_text()
        assert noted.endswith("triton") and "vision (" in noted

        later = VisionEncoder.of(runner.model, None, vision_block, note_for)
        assert later.checked
        ours = later.features(inputs["pixel_values"], inputs["image_grid_thw"])
        assert len(own_runs) == 1  # not run again
        torch.testing.assert_close(ours, own_features(runner, inputs), rtol=1e-5, atol=1e-6)

        modules = VisionEncoder.of(runner.model, None, None, note_for)  # its modules: not what was checked
        assert modules.runs == "modules" and not modules.checked
    monkeypatch.delenv(handover.STATE_ENV)
    assert not VisionEncoder.of(runner.model, None, vision_block, note_for).checked  # no supervisor: no note
