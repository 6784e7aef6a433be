"""The batched decoder against transformers' own `generate` on the smoke model (CPU, float32)."""

import threading

import pytest
from PIL import Image

from inference.engine import Engine, TokenSink
from inference.model_runner import buckets, fit

PROMPTS = [
    ("describe the picture", 1),
    ("hello there, how are you today?", 0),
    ("two words", 0),
    ("what colour is it", 1),
    ("a longer prompt " * 12, 0),
]


class Collect(TokenSink):
    def __init__(self):
        self.ids: list[int] = []
        self.error = None
        self.finished = threading.Event()

    def tokens(self, ids):
        self.ids.extend(ids)

    def done(self, error):
        self.error = error
        self.finished.set()


def messages(text: str, images: int) -> list[dict]:
    return [{"role": "user", "content": [*({"type": "image"} for _ in range(images)), {"type": "text", "text": text}]}]


def images(count: int) -> list:
    return [Image.new("RGB", (112, 84), (30 * i, 200, 90)) for i in range(count)]


@pytest.fixture(
    scope="module",
    params=[
        ("cpu", "eager"),
        ("cpu", "triton"),  # the kernels in Triton's interpreter (tests/env.py)
        pytest.param(("cuda", "auto"), marks=pytest.mark.gpu),
        pytest.param(("cuda", "eager"), marks=pytest.mark.gpu),
    ],
    ids="-".join,
)
def engines(smoke_model, request):
    """On "cuda" the decoding step runs as recorded CUDA graphs; "auto" is the Triton kernels there."""
    device, kernels = request.param
    reference = Engine(str(smoke_model), device, "float32", decoder="generate")
    reference.load()
    batched = Engine(str(smoke_model), device, "float32", decoder="batched", slots=3, context=512, step_kernels=kernels)
    batched.load()
    assert batched.decoding.runner.use_graphs == (device == "cuda")
    assert batched.decoding.runner.kernels == ("triton" if kernels == "auto" else kernels)
    return reference, batched


def run(engine: Engine, prompts, max_new_tokens=12, **sampling) -> list[Collect]:
    sinks = []
    for text, count in prompts:
        prepared = engine.prepare(messages(text, count), images(count), 1 << 20)
        sink = Collect()
        engine.generate(
            prepared,
            sink,
            max_new_tokens=max_new_tokens,
            temperature=sampling.get("temperature", 0.0),
            top_p=sampling.get("top_p", 1.0),
            should_stop=sampling.get("should_stop", lambda: False),
        )
        sinks.append(sink)
    for sink in sinks:
        assert sink.finished.wait(60)
        assert sink.error is None
    return sinks


def test_batched_greedy_tokens_equal_generate_for_text_and_image_prompts(engines):
    reference, batched = engines
    expected = [run(reference, [prompt])[0].ids for prompt in PROMPTS]
    # Five requests over three slots: they join and leave the shared step mid-way.
    got = [sink.ids for sink in run(batched, PROMPTS)]
    assert got == expected
    assert all(len(ids) == 12 or ids[-1] in batched.eos_ids for ids in got)
    assert batched.decoding.scheduler.running == 0
    if batched.decoding.runner.use_graphs:
        assert batched.decoding.runner.graphs  # the replayed graphs gave the tokens above


def test_a_text_prompt_after_an_image_prompt_does_not_inherit_its_rope_offset(engines):
    reference, batched = engines
    text_only = ("plain text only", 0)
    alone = run(reference, [text_only])[0].ids
    got = run(batched, [("an image first", 1), text_only])
    assert got[1].ids == alone


def test_stop_request_frees_its_slot_and_others_continue(engines):
    _, batched = engines
    stop = threading.Event()
    prepared = batched.prepare(messages("stop me", 0), [], 1 << 20)
    stopped = Collect()
    batched.generate(prepared, stopped, max_new_tokens=10_000, temperature=0, top_p=1, should_stop=stop.is_set)
    others = run(batched, PROMPTS[:2], max_new_tokens=6)
    assert [len(sink.ids) for sink in others] == [6, 6] or any(s.ids[-1] in batched.eos_ids for s in others)
    assert not stopped.finished.is_set() or stopped.ids[-1] in batched.eos_ids
    stop.set()
    assert stopped.finished.wait(30)
    assert batched.decoding.scheduler.running == 0


def test_sampling_respects_top_p_and_stays_within_the_vocabulary(engines):
    _, batched = engines
    vocab = batched.model.config.text_config.vocab_size
    sinks = run(batched, PROMPTS[:3], max_new_tokens=8, temperature=1.0, top_p=0.9)
    assert all(0 <= token < vocab for sink in sinks for token in sink.ids)
    # top_p this small keeps only the most likely token: sampling becomes greedy.
    greedy = [sink.ids for sink in run(batched, PROMPTS[:3], max_new_tokens=8)]
    narrow = [sink.ids for sink in run(batched, PROMPTS[:3], max_new_tokens=8, temperature=1.0, top_p=1e-6)]
    assert narrow == greedy


def test_a_prompt_longer_than_a_slot_fails_alone(engines):
    _, batched = engines
    prepared = batched.prepare(messages("word " * 600, 0), [], 1 << 20)
    sink = Collect()
    batched.generate(prepared, sink, max_new_tokens=4, temperature=0, top_p=1, should_stop=lambda: False)
    assert sink.finished.wait(30)
    assert "a slot holds 512" in str(sink.error)
    assert run(batched, PROMPTS[1:2], max_new_tokens=3)[0].ids


def test_buckets_cover_the_limit():
    assert buckets(16, 1) == [1, 2, 4, 8, 16]
    assert buckets(10240, 256)[-2:] == [8192, 10240]
    assert fit([1, 2, 4], 3) == 4


def test_the_slot_size_bounds_prompts_and_answers(start_server):
    """MAX_CONTEXT smaller than the prompt and token limits: a longer prompt is refused up front, and
    an answer that fills the slot ends with finish_reason "length"."""
    import httpx

    from tests.inference.helpers import chat

    server = start_server(MAX_CONTEXT="40", MAX_NEW_TOKENS="64")
    refused = httpx.post(server.url + "/v1/chat/completions", json=chat("word " * 60), timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
    assert "the limit is 39" in refused.json()["error"]["message"]
    full = httpx.post(server.url + "/v1/chat/completions", json=chat("hi", max_tokens=64), timeout=60).json()
    # The smoke checkpoint is seeded and decoding greedy: this answer runs into the slot's end.
    # 40 cached positions hold the prompt and every token but the last: 41 tokens in all.
    assert full["choices"][0]["finish_reason"] == "length", full
    usage = full["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == 41, usage


def test_an_engine_thread_failure_fails_the_running_requests_and_the_thread_goes_on(engines):
    _, batched = engines
    batcher = batched.decoding.scheduler
    original = batcher._decode
    failures = []

    def fails_once():
        if not failures:
            failures.append(1)
            raise RuntimeError("the step broke")
        original()

    batcher._decode = fails_once
    try:
        prepared = batched.prepare(messages("break", 0), [], 1 << 20)
        broken = Collect()
        batched.generate(prepared, broken, max_new_tokens=8, temperature=0, top_p=1, should_stop=lambda: False)
        assert broken.finished.wait(30)
        assert "the step broke" in str(broken.error)
        assert run(batched, PROMPTS[1:2], max_new_tokens=3)[0].ids
        assert batcher.thread.is_alive() and batcher.running == 0
    finally:
        batcher._decode = original
