"""The two ways the engine turns a prepared prompt into tokens, behind one interface.

"batched" (the default): every request decodes in one shared step over a slot KV cache, CUDA-graphed
on a GPU (scheduler.py over model_runner.py). "generate": transformers' own `generate`, one thread per
request (or one long-lived thread with a static KV cache); the reference the benchmarks compare
against.
"""

import queue
import threading
from collections.abc import Callable
from typing import Protocol


class TokenSink:
    """Receives generated token ids from the generation thread (see Decoder.submit)."""

    truncated = False  # set before done() when the context (a batched slot) was full

    def tokens(self, ids: list[int]) -> None: ...

    def done(self, error: BaseException | None) -> None: ...


class Decoder(Protocol):
    warmup_tokens: int  # how long the start-up generation runs

    def submit(
        self,
        inputs: dict,
        sink: TokenSink,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        should_stop: Callable[[], bool],
    ) -> None:
        """Generate on the decoder's thread(s), feeding `sink`; `should_stop` ends it early."""

    def prompt_limit(self, max_prompt_tokens: int) -> int:
        """The longest prompt a request may have."""

    def before_warmup(self) -> None:
        """Told before the warm-up generation (nothing else runs until after_warmup)."""

    def after_warmup(self) -> dict:
        """Work done once the warm-up generation ran (CUDA graphs); its phases' seconds."""

    def stats(self) -> dict:
        """How generation runs, for /health and /metrics."""

    def close(self) -> None:
        """Stop its thread(s) before the process ends."""


class BatchedDecoder:
    warmup_tokens = 2

    def __init__(self, model, eos_ids: set[int], slots: int, context: int, cuda_graphs: bool, kernels: str):
        from inference.model_runner import ModelRunner
        from inference.scheduler import Scheduler

        self.runner = ModelRunner(model, slots, context, cuda_graphs, kernels)
        self.scheduler = Scheduler(self.runner, eos_ids)

    def submit(self, inputs, sink, *, max_new_tokens, temperature, top_p, should_stop) -> None:
        from inference.scheduler import Job

        inputs = self.runner.with_positions(inputs)  # on the host, on the request's thread
        self.scheduler.submit(Job(inputs, sink, max_new_tokens, temperature, top_p, should_stop))

    def prompt_limit(self, max_prompt_tokens: int) -> int:
        return min(max_prompt_tokens, self.runner.context - 1)  # a slot also holds one generated token

    def close(self) -> None:
        self.scheduler.stop()

    def before_warmup(self) -> None:
        # The warm-up prompt's graph recorded as it comes and replayed, not after an eager pass of its own
        # (the decoder runs nothing else meanwhile).
        self.runner.record_at_once = self.runner.use_graphs

    def after_warmup(self) -> dict:
        self.runner.record_at_once = False
        if not self.runner.use_graphs:
            return {}
        import time

        began = time.monotonic()
        if self.runner.vision is not None:
            self.runner.vision.wanted.clear()  # the warm-up's small image: recorded when a client's has its grid
        self.runner.record_wanted()  # any prompt shape the warm-up left wanted (its own was recorded as it came)
        # The decoding steps of more than one row (the warm-up's one row was recorded as it ran): by the
        # scheduler once ready, one at a time while idle, or by the first step that needs one.
        self.scheduler.record_later()
        return {"cuda_graphs": round(time.monotonic() - began, 3)}

    def stats(self) -> dict:
        runner = self.runner
        return {
            "decoder": "batched",
            "slots": runner.slots,
            "slots_wanted": self.scheduler.wanted_slots,  # more while a handover's smaller cache grows back
            "slots_in_use": self.scheduler.running,
            "waiting": len(self.scheduler.waiting),
            "context_tokens": runner.context,
            "kv_cache_bytes": runner.cache_bytes,
            "cuda_graphs": len(runner.graphs),
            "prompt_graphs": len(runner.prompt_graphs),  # (prompts, padded length) shapes recorded so far
            "prompt_graph_replays": runner.prompt_replays,  # prefills run as one of them
            "prompt_graphs_recorded_busy": self.scheduler.recorded_busy,  # between steps, under load
            # Image grids whose vision encoder pass is recorded, and image prompts that replayed one;
            # null: the model's own encoder runs (a model whose forward cannot take features, or one
            # that disagreed with it).
            "vision_graphs": len(runner.vision.graphs) if runner.vision and runner.vision.visual else None,
            "vision_graph_replays": runner.vision.replays if runner.vision else 0,
            # Image prompts whose images were encoded in one pass with other prompts' (no graph of their grid).
            "vision_together": runner.vision.together if runner.vision else 0,
            # What computes image features: "triton" (its small work as Triton kernels), "modules" (the
            # encoder's own modules, prepared per grid) or null (the model's own encoder).
            "vision_kernels": runner.vision.runs if runner.vision else None,
            "graph_record_seconds": round(runner.record_seconds, 3),
            "kernels": runner.kernels,
            "dependent_launch": runner.dependent_launch,  # STEP_PDL: on a GPU of compute capability 9 or more
            "steps": self.scheduler.steps,
            "steps_queued_ahead": self.scheduler.queued_ahead,  # queued before the step before was read
            "step_seconds": round(self.scheduler.step_seconds, 3),
            "emit_seconds": round(self.scheduler.emit_seconds, 3),
            "prefills": self.scheduler.prefills,
            "prefill_seconds": round(self.scheduler.prefill_seconds, 3),
        }


class _StopWhen:
    """transformers' StoppingCriteria asking `should_stop` (disconnect, timeout, drain) every token."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


class _Streamer:
    """transformers' streamer interface: new token ids to the sink (generate() first echoes the prompt)."""

    def __init__(self, sink: TokenSink):
        self.sink, self.prompt_seen = sink, False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.sink.tokens(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


class GenerateDecoder:
    def __init__(self, model, tokenizer, device: str, eos_ids: set[int], kv_cache: str):
        self.model, self.tokenizer, self.device, self.eos_ids = model, tokenizer, device, eos_ids
        # "static": a preallocated KV cache lets transformers compile the decoding step. The model then
        # holds one cache and the compiled step's CUDA graphs belong to the thread that recorded them,
        # so every generation runs on one long-lived thread, one at a time; the first (the warm-up)
        # compiles, at a cache long enough for real requests.
        self.kv_cache = kv_cache
        self.warmup_tokens = 64 if kv_cache == "static" else 2
        self._jobs: queue.Queue | None = queue.Queue() if kv_cache == "static" else None
        self._runner: threading.Thread | None = None
        self._runner_lock = threading.Lock()
        self._busy = 0  # generations submitted and not yet done (close waits for them)
        self._idle = threading.Condition()

    def submit(self, inputs, sink, *, max_new_tokens, temperature, top_p, should_stop) -> None:
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        )
        cache = {"cache_implementation": "static"} if self.kv_cache == "static" else {}

        def run() -> None:
            import torch
            from transformers import StoppingCriteriaList

            error = None
            try:
                with torch.inference_mode():
                    self.model.generate(
                        **{k: v.to(self.device) for k, v in inputs.items()},
                        max_new_tokens=max_new_tokens,
                        streamer=_Streamer(sink),
                        stopping_criteria=StoppingCriteriaList([_StopWhen(should_stop)]),
                        eos_token_id=list(self.eos_ids),
                        pad_token_id=self.tokenizer.pad_token_id,
                        **cache,
                        **sampling,
                    )
            except BaseException as exc:  # reported to the request, never lost in the thread
                error = exc
            finally:
                inputs.clear()  # drop tensor references at once: no KV/pixel memory outlives the request
                sink.done(error)
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        with self._idle:
            self._busy += 1
        if self._jobs is None:
            threading.Thread(target=run, name="generate", daemon=True).start()
            return
        with self._runner_lock:
            if self._runner is None:
                self._runner = threading.Thread(target=self._run_jobs, name="generate", daemon=True)
                self._runner.start()
        self._jobs.put(run)

    def _run_jobs(self) -> None:
        while True:
            self._jobs.get()()  # each job reports its own outcome to its sink

    def prompt_limit(self, max_prompt_tokens: int) -> int:
        return max_prompt_tokens

    def before_warmup(self) -> None:
        pass

    def after_warmup(self) -> dict:
        return {}

    def close(self, timeout: float = 10.0) -> None:
        """Wait for the generations under way (their requests are stopped by then: each ends at its
        next token); between generations its threads wait outside CUDA."""
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout)

    def stats(self) -> dict:
        return {"decoder": "generate"}
