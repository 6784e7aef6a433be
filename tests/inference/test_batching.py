"""The batched decoder against transformers' own `generate` on the smoke model (CPU, float32)."""

import threading
import time

import pytest
from PIL import Image

from inference.engine import Engine, TokenSink
from inference.model_runner import buckets, fit
from inference.vision import ImageGrids

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


def engine_pair(smoke_model, device: str, kernels: str) -> tuple[Engine, Engine]:
    """transformers' `generate` and the batched decoder on `device`, the step's kernels `kernels`."""
    reference = Engine(str(smoke_model), device, "float32", decoder="generate")
    reference.load()
    batched = Engine(str(smoke_model), device, "float32", decoder="batched", slots=3, context=512, step_kernels=kernels)
    batched.load()
    assert batched.decoding.scheduler.queue_ahead == (device == "cuda")
    batched.decoding.scheduler.queue_ahead = True  # on a CPU too: the path a GPU takes
    assert batched.decoding.runner.use_graphs == (device == "cuda")
    assert batched.decoding.runner.kernels == ("triton" if kernels == "auto" else kernels)
    # the Triton kernels launched dependent (STEP_PDL=auto) on Hopper and later, never in the interpreter
    import torch

    hopper = device == "cuda" and torch.cuda.get_device_capability()[0] >= 9
    assert batched.decoding.stats()["dependent_launch"] == (hopper and kernels in ("auto", "triton"))
    return reference, batched


@pytest.fixture(
    scope="module",
    params=[
        ("cpu", "eager"),
        pytest.param(("cuda", "auto"), marks=pytest.mark.gpu),
        pytest.param(("cuda", "eager"), marks=pytest.mark.gpu),
    ],
    ids="-".join,
)
def engines(smoke_model, request):
    """On "cuda" the decoding step runs as recorded CUDA graphs; "auto" is the Triton kernels there."""
    return engine_pair(smoke_model, *request.param)


def run_async(engine: Engine, max_new_tokens: int, should_stop) -> list[Collect]:
    """One text prompt submitted, not waited for."""
    sink = Collect()
    prepared = engine.prepare(messages("go on", 0), [], 1 << 20)
    engine.generate(prepared, sink, max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, should_stop=should_stop)
    return [sink]


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
    greedy_tokens_equal_generate(*engines)


def test_the_triton_kernels_give_generates_tokens_in_their_interpreter_on_a_cpu(smoke_model):
    """The whole runner with the Triton kernels, on a CPU in Triton's interpreter (tests/env.py): slow
    there, so this test only; the kernels one by one are in test_kernels.py. Then prompts alone, run
    padded as their graphs run them (with the kernels' add, norms and gated activation)."""
    reference, batched = engine_pair(smoke_model, "cpu", "triton")
    greedy_tokens_equal_generate(reference, batched)
    batched.decoding.runner.prompt_sizes = [16, 32, 64, 128]
    for prompt in (PROMPTS[4], PROMPTS[0]):  # the longest, then an image one with its rows left over
        assert run(batched, [prompt], 3)[0].ids == run(reference, [prompt], 3)[0].ids


def greedy_tokens_equal_generate(reference: Engine, batched: Engine) -> None:
    expected = [run(reference, [prompt])[0].ids for prompt in PROMPTS]
    ahead = batched.decoding.scheduler.queued_ahead
    # Five requests over three slots: they join and leave the shared step mid-way.
    got = [sink.ids for sink in run(batched, PROMPTS)]
    assert got == expected
    # Most steps took their input from the step before on the device, queued before it was read.
    assert batched.decoding.scheduler.queued_ahead - ahead >= 5
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


@pytest.mark.parametrize("padded", [False, True], ids=["eager", "as-graphed"])
def test_prompts_prefilled_together_give_what_each_gives_alone(engines, padded):
    """One pass over the layers for several prompts (text and image, different lengths): each
    prompt's last logits, rope offset and keys/values in its slot are those of its own prefill.
    Eagerly, or as their graph runs them (runner.prompt_pass; on a CPU without the graph): three
    prompts padded to the longest's recorded size and to four prompts, the first repeated, over
    padding rows of noise."""
    import torch

    _, batched = engines
    runner = batched.decoding.runner
    recorded = runner.prompt_sizes
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[3]]
    inputs = [
        {k: v.to(runner.device) for k, v in batched.prepare(messages(t, n), images(n), 1 << 20).inputs.items()}
        for t, n in prompts
    ]
    lengths = [each["input_ids"].shape[1] for each in inputs]
    try:
        with torch.inference_mode(), batched.decoding.scheduler.wake:  # held: it records nothing meanwhile
            runner.prompt_sizes = []
            alone = []
            for slot, each in enumerate(inputs):
                logits, delta = runner.prefill(each, slot)
                alone.append((logits, delta, [layer[slot, :, :, : lengths[slot]].clone() for layer in runner.cache]))
            if padded:
                runner.prompt_sizes = [8, 16, 32, 64, 128]
                assert runner._prompt_shape(lengths) == (4, 32) and len(set(lengths)) == 3
                # Beyond the longest lone prompt's rows, prompts run eagerly.
                assert runner._prompt_shape([30] * 5) is None and runner._prompt_shape([129]) is None
                for each in runner._prompt_inputs()[:3]:  # noise in every row
                    each.normal_()
            call = lambda: runner.prefill_many([(each, s) for s, each in enumerate(inputs)])  # noqa: E731
            joined = runner.vision.together
            together = as_graphed(runner, call) if padded else call()
    finally:
        runner.prompt_sizes = recorded
    # The two image prompts' images in one pass, unless their grid replays a graph another test recorded.
    grid = ImageGrids.of(inputs[0]["image_grid_thw"])
    assert runner.vision.together == joined + 2 or grid in runner.vision.graphs
    tolerance = {"atol": 1e-4, "rtol": 1e-4} if runner.dtype == torch.float32 else {"atol": 5e-2, "rtol": 5e-2}
    for slot, ((logits, delta, cache), (logits_now, delta_now)) in enumerate(zip(alone, together, strict=True)):
        assert delta_now == delta
        assert logits_now.shape == logits.shape and logits_now.argmax() == logits.argmax()
        torch.testing.assert_close(logits_now, logits, **tolerance)
        for before, layer in zip(cache, runner.cache, strict=True):
            torch.testing.assert_close(layer[slot, :, :, : lengths[slot]], before, **tolerance)
    assert any(delta for _, delta, _ in alone)  # an image prompt's rope offset was among them
    if padded and runner.use_graphs:
        assert (4, 32) in runner.prompt_graphs


@pytest.fixture(scope="module")
def fresh_gpu_engines(smoke_model):
    """A pair of its own, no prompt shape recorded by another test; warmed up as the server does, after
    which its decoder records prompt graphs when idle."""
    reference, batched = engine_pair(smoke_model, "cuda", "auto")
    batched.warmup()
    runner = batched.decoding.runner
    assert batched.decoding.scheduler.record_graphs and runner.prompt_graphs
    # The warm-up's prompt recorded as it came and replayed, not run eagerly first; later ones wait.
    assert runner.prompt_replays == 1 and not runner.record_at_once
    return reference, batched


@pytest.mark.gpu
def test_a_ready_decoder_records_its_steps_of_more_rows_when_idle_or_when_a_step_first_needs_one(fresh_gpu_engines):
    reference, batched = fresh_gpu_engines
    scheduler, runner = batched.decoding.scheduler, batched.decoding.runner
    first = runner.context_sizes[0]
    assert (1, first) in runner.graphs  # recorded as the warm-up ran: ready without the others
    deadline = time.monotonic() + 30
    while runner.common_missing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not runner.common_missing and {(rows, first) for rows in runner.slot_sizes} <= set(runner.graphs)
    # A step of two rows before the idle decoder recorded its graph: that step records it, then replays it.
    scheduler.record_graphs = False
    try:
        del runner.graphs[2, first]
        prompts = PROMPTS[1:3]
        sinks = [Collect() for _ in prompts]
        with scheduler.wake:  # held: the engine thread admits both at once, after
            for sink, (text, count) in zip(sinks, prompts, strict=True):
                prepared = batched.prepare(messages(text, count), images(count), 1 << 20)
                batched.generate(prepared, sink, max_new_tokens=8, temperature=0, top_p=1, should_stop=lambda: False)
        assert all(sink.finished.wait(60) and sink.error is None for sink in sinks)
        expected = [run(reference, [prompt], max_new_tokens=8)[0].ids for prompt in prompts]
        assert [sink.ids for sink in sinks] == expected
        assert (2, first) in runner.graphs
    finally:
        scheduler.record_later()


@pytest.mark.gpu
def test_a_decoding_step_whose_graph_cannot_be_recorded_runs_eagerly_and_so_do_the_later_ones(
    fresh_gpu_engines, caplog
):
    reference, batched = fresh_gpu_engines
    runner = batched.decoding.runner
    prompts = PROMPTS[1:3]
    expected = [run(reference, [prompt], max_new_tokens=8)[0].ids for prompt in prompts]

    tried = []

    def fails(rows, length):
        tried.append(rows)
        raise RuntimeError("out of memory while recording")

    runner._record = fails  # the next recording fails as a real one would, before its graph exists
    try:
        runner.graphs.clear()
        assert [sink.ids for sink in run(batched, prompts, max_new_tokens=8)] == expected
        assert not runner.use_graphs and not runner.graphs
        assert "graph could not be recorded" in caplog.text
        assert [sink.ids for sink in run(batched, prompts, max_new_tokens=8)] == expected
        assert len(tried) == 1  # eagerly from then on, never tried again
    finally:
        del runner._record
        runner.use_graphs = True


@pytest.mark.gpu
def test_prompts_admitted_together_run_eagerly_until_the_idle_decoder_records_their_graph(fresh_gpu_engines):
    reference, batched = fresh_gpu_engines
    scheduler, runner = batched.decoding.scheduler, batched.decoding.runner
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[3]]  # 25, 28 and 32 tokens: a graph of 4 x 32 rows
    expected = [run(reference, [prompt], max_new_tokens=6)[0].ids for prompt in prompts]
    assert (4, 32) not in runner.prompt_graphs

    def together() -> tuple[list[list[int]], int]:
        sinks = [Collect() for _ in prompts]
        with scheduler.wake:  # held: the engine thread admits all three at once, after
            for sink, (text, count) in zip(sinks, prompts, strict=True):
                prepared = batched.prepare(messages(text, count), images(count), 1 << 20)
                batched.generate(prepared, sink, max_new_tokens=6, temperature=0, top_p=1, should_stop=lambda: False)
            prefills, replays = scheduler.prefills, runner.prompt_replays
        assert all(sink.finished.wait(60) and sink.error is None for sink in sinks)
        assert scheduler.prefills == prefills + 3
        return [sink.ids for sink in sinks], runner.prompt_replays - replays

    answers, replays = together()
    assert answers == expected and replays == 0  # eagerly: no graph of that shape yet
    deadline = time.monotonic() + 30
    while (4, 32) not in runner.prompt_graphs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (4, 32) in runner.prompt_graphs and not runner.prompt_wanted
    answers, replays = together()
    assert answers == expected and replays == 1  # one replay for the three


@pytest.mark.gpu
def test_a_decoder_never_idle_records_a_prompt_shape_that_keeps_coming_into_a_free_slot(fresh_gpu_engines):
    """While one request decodes, a prompt shape without a graph runs eagerly until its eager passes
    have cost what its recording would (forced here to nothing: due at once); then it is recorded
    between steps, its warm-up writing into a free slot, and replayed after. The running request's
    keys and values are untouched: its answer is generate's."""
    reference, batched = fresh_gpu_engines
    scheduler, runner = batched.decoding.scheduler, batched.decoding.runner
    long_prompt, short_prompt = PROMPTS[1], PROMPTS[4]
    length = batched.prepare(messages(short_prompt[0], 0), [], 1 << 20).inputs["input_ids"].shape[1]
    shape = runner._prompt_shape([length])
    assert shape is not None and shape not in runner.prompt_graphs
    expected_long = run(reference, [long_prompt], max_new_tokens=300)[0].ids
    expected_short = run(reference, [short_prompt], max_new_tokens=2)[0].ids
    cost, busy = runner.prompt_record_cost, scheduler.recorded_busy
    runner.prompt_record_cost = 0.0
    try:
        running = Collect()
        batched.generate(
            batched.prepare(messages(long_prompt[0], 0), [], 1 << 20),
            running,
            max_new_tokens=300,
            temperature=0,
            top_p=1,
            should_stop=lambda: False,
        )
        answers = []
        while shape not in runner.prompt_graphs and len(answers) < 20:
            answers.append(run(batched, [short_prompt], max_new_tokens=2)[0].ids)
        recorded_while_running = shape in runner.prompt_graphs and not running.finished.is_set()
        replays = runner.prompt_replays
        answers += [run(batched, [short_prompt], max_new_tokens=2)[0].ids for _ in range(2)]
    finally:
        runner.prompt_record_cost = cost
    assert running.finished.wait(60) and running.error is None
    assert recorded_while_running and scheduler.recorded_busy > busy
    assert runner.prompt_replays == replays + 2  # the two after it, replayed
    assert answers == [expected_short] * len(answers)
    assert running.ids == expected_long


def test_a_prompt_too_long_fails_alone_among_prompts_admitted_together(engines):
    """Requests admitted in one go are prefilled together; one that cannot be fails its own request
    only, and the others are prefilled and answered."""
    reference, batched = engines
    expected = [run(reference, [prompt], max_new_tokens=4)[0].ids for prompt in PROMPTS[1:3]]
    scheduler = batched.decoding.scheduler
    sinks = [Collect() for _ in range(3)]
    requests = [messages("word " * 600, 0), messages(PROMPTS[1][0], 0), messages(PROMPTS[2][0], 0)]
    with scheduler.wake:  # held: the engine thread admits all three at once, after
        for sink, request in zip(sinks, requests, strict=True):
            batched.generate(
                batched.prepare(request, [], 1 << 20),
                sink,
                max_new_tokens=4,
                temperature=0,
                top_p=1,
                should_stop=lambda: False,
            )
        assert len(scheduler.waiting) == 3
        prefills = scheduler.prefills
    assert all(sink.finished.wait(60) for sink in sinks)
    assert "a slot holds 512" in str(sinks[0].error)
    assert [sink.error for sink in sinks[1:]] == [None, None]
    assert [sink.ids for sink in sinks[1:]] == expected
    assert scheduler.prefills == prefills + 2


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


class RoomAfter(Collect):
    """Says there is room for more KV cache slots once it has `tokens` tokens."""

    def __init__(self, tokens: int):
        super().__init__()
        self.tokens_before_room = tokens
        self.room = threading.Event()

    def tokens(self, ids):
        super().tokens(ids)
        if len(self.ids) >= self.tokens_before_room:
            self.room.set()


def test_a_smaller_kv_cache_grows_back_between_steps_and_its_stream_goes_on(engines, monkeypatch):
    """A handover's new process may start with fewer slots than asked (handover.fit_slots), then
    grows once there is room: mid-stream, the stream keeping its keys and values."""
    from inference import handover, scheduler

    monkeypatch.setattr(scheduler, "GROW_CHECK_SECONDS", 0.0)  # ask at every step, not once a second
    reference, batched = engines
    device, kernels = str(batched.decoding.runner.device), batched.decoding.runner.kernels
    small = Engine(
        reference.model_path, device, "float32", decoder="batched", slots=1, context=512, step_kernels=kernels
    )
    small.load()
    small.decoding.scheduler.queue_ahead = True  # growing while a step is queued ahead, as on a GPU
    runner = small.decoding.runner
    assert runner.cache_bytes == handover.kv_slot_bytes(reference.model_path, 512, 4)  # what fit_slots counts
    expected = [run(reference, [prompt], max_new_tokens=24)[0].ids for prompt in PROMPTS[:3]]

    stream = RoomAfter(4)
    asked: list[int] = []
    small.decoding.scheduler.grow_to(3, lambda need: asked.append(need) or stream.room.is_set())
    text, count = PROMPTS[0]
    prepared = small.prepare(messages(text, count), images(count), 1 << 20)
    small.generate(prepared, stream, max_new_tokens=24, temperature=0, top_p=1, should_stop=lambda: False)
    assert stream.finished.wait(60) and stream.error is None
    assert stream.ids == expected[0]
    assert runner.slots == 3 and small.decoding.stats()["slots"] == 3
    assert asked and asked[-1] == 3 * handover.kv_slot_bytes(reference.model_path, 512, 4)  # old and new side by side
    # All three slots serve at once now, and give the same tokens.
    assert [sink.ids for sink in run(small, PROMPTS[:3], max_new_tokens=24)] == expected
    assert small.decoding.scheduler.running == 0


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_closing_the_engine_ends_its_scheduler_thread(smoke_model, device):
    """The server closes its engine before the process ends, so no thread is inside CUDA while the
    interpreter ends (an abort, exit code 134, on a GPU). Closed while idle, the thread ends."""
    engine = Engine(str(smoke_model), device, "float32", decoder="batched", slots=2, context=512)
    engine.load()
    engine.warmup()
    assert len(run(engine, [("one", 0), ("two", 1)])[1].ids) > 0
    thread = engine.decoding.scheduler.thread
    assert thread.is_alive()
    engine.close()
    assert not thread.is_alive()


def test_closing_a_generate_engine_waits_for_the_generation_under_way(smoke_model):
    """transformers' generate runs on threads of its own: closing waits until the one under way has
    ended (its request stopped, as the server's are by the time it closes)."""
    engine = Engine(str(smoke_model), "cpu", "float32", decoder="generate")
    engine.load()
    stop = threading.Event()
    [sink] = run_async(engine, max_new_tokens=400, should_stop=stop.is_set)
    assert not sink.finished.wait(0.5)  # still generating
    stop.set()
    engine.close()
    assert sink.finished.is_set() and sink.error is None
    engine.close()  # nothing under way: at once


def test_fit_slots_counts_the_weights_the_cache_and_the_reserve():
    gib = 2**30
    # Room for everything: the slots asked for.
    assert handover_fit(free=30 * gib, weights=20 * gib, reserve=2 * gib, slot=gib, slots=8) == (8, "")
    # A holder keeps the weights: they are not counted again.
    assert handover_fit(free=11 * gib, weights=0, reserve=2 * gib, slot=gib, slots=8) == (8, "")
    # Room for three slots of eight.
    slots, why = handover_fit(free=25.5 * gib, weights=20 * gib, reserve=2 * gib, slot=gib, slots=8)
    assert slots == 3 and "3 of 8 KV cache slots" in why
    # Not one slot: no handover, and why.
    slots, why = handover_fit(free=22.5 * gib, weights=20 * gib, reserve=2 * gib, slot=gib, slots=8)
    assert slots == 0 and "a second model needs 23.0 GiB and the GPU has 22.5 GiB free" == why
    # A cache it cannot size (no config) counts nothing beyond the weights and the reserve.
    assert handover_fit(free=23 * gib, weights=20 * gib, reserve=2 * gib, slot=0, slots=8) == (8, "")
    assert handover_fit(free=21 * gib, weights=20 * gib, reserve=2 * gib, slot=0, slots=8)[0] == 0


def as_graphed(runner, call):
    """`call()`'s prompts as the prompt graphs run them: on a GPU, run once eagerly for want of their
    graphs, then again once recorded (record_wanted, as the scheduler does when idle)."""
    out = call()
    if runner.use_graphs:
        assert runner.prompt_wanted
        runner.record_wanted()
        out = call()
    return out


def handover_fit(*, free, weights, reserve, slot, slots):
    from inference.handover import fit_slots

    return fit_slots(int(free), "GPU", weights, reserve, slot, slots)


def test_a_prompt_run_padded_gives_what_it_gives_unpadded(engines):
    """A prompt's text layers as its graph runs them (runner.prompt_pass: padded to a recorded size,
    the slot and the last token as tensors; on a CPU without the graph): the same logits and keys
    and values as unpadded, and the same answers, with the padding rows left over from a longer
    prompt before it."""
    import torch

    reference, batched = engines
    runner = batched.decoding.runner
    recorded = runner.prompt_sizes
    ordered = sorted(PROMPTS, key=lambda prompt: -len(prompt[0]))
    inputs = [
        {k: v.to(runner.device) for k, v in batched.prepare(messages(t, n), images(n), 1 << 20).inputs.items()}
        for t, n in ordered
    ]
    lengths = [each["input_ids"].shape[1] for each in inputs]
    try:
        with torch.inference_mode(), batched.decoding.scheduler.wake:  # held: it records nothing meanwhile
            runner.prompt_sizes = []
            unpadded = [runner.prefill(each, 1) for each in inputs]
            shortest = [layer[1, :, :, : lengths[-1]].clone() for layer in runner.cache]  # the last prompt's
            runner.prompt_sizes = [8, 16, 32, 64, 128]
            assert runner._prompt_shape([max(lengths)]) == (1, 128) and runner._prompt_shape([min(lengths)]) == (1, 16)
            padded = as_graphed(runner, lambda: [runner.prefill(each, 1) for each in inputs])
        tolerance = {"atol": 1e-4, "rtol": 1e-4} if runner.dtype == torch.float32 else {"atol": 5e-2, "rtol": 5e-2}
        for (logits, delta), (logits_now, delta_now) in zip(unpadded, padded, strict=True):
            assert delta_now == delta and logits_now.argmax() == logits.argmax()
            torch.testing.assert_close(logits_now, logits, **tolerance)
        for before, layer in zip(shortest, runner.cache, strict=True):
            torch.testing.assert_close(layer[1, :, :, : lengths[-1]], before, **tolerance)
        # Whole answers, one request at a time (each prefilled alone, so padded; on a GPU eagerly until
        # the decoder, idle, has recorded its shape).
        for prompt in ordered:
            assert run(batched, [prompt])[0].ids == run(reference, [prompt])[0].ids
        if runner.use_graphs:
            assert runner.prompt_graphs
    finally:
        runner.prompt_sizes = recorded


@pytest.mark.gpu
def test_on_a_gpu_prompts_attend_without_cudnn_which_plans_for_every_new_length(smoke_model):
    """In bfloat16 PyTorch would pick cuDNN's attention, which builds a plan at each new prompt length
    (tens of milliseconds each on an H200); the engine's prefill takes flash attention instead."""
    import torch

    engine = Engine(str(smoke_model), "cuda", "bfloat16", decoder="batched", slots=2, context=1024)
    engine.load()
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    runner = engine.decoding.runner
    vocab = engine.model.config.text_config.vocab_size
    ids = (torch.arange(611, device="cuda") % vocab)[None]  # a length no graph takes
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": torch.zeros_like(ids, dtype=torch.int32),
    }
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile, torch.inference_mode():
        runner.prefill_many([(inputs, 0)])
    ran = {event.name for event in profile.events()}
    assert "aten::_scaled_dot_product_flash_attention" in ran
    assert not any("cudnn_attention" in name for name in ran)
