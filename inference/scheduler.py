"""Continuous batching: one engine thread admits requests between steps and decodes every active
one in a single shared step (model_runner.py).

New requests join between steps; finished ones leave and free their slot at once, so nothing grows
with traffic.
"""

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from inference.model_runner import ModelRunner
from inference.sampler import sample

log = logging.getLogger("inference.scheduler")
GROW_CHECK_SECONDS = 1.0
PREFILL_TOKENS = 8192  # the most prompt tokens prefilled in one pass (their activations at once)


@dataclass
class Job:
    inputs: dict  # tensors of one prompt (Engine.prepare), on any device
    sink: object  # TokenSink
    max_new_tokens: int
    temperature: float
    top_p: float
    should_stop: Callable[[], bool]
    slot: int = -1
    produced: int = 0
    last_id: int = 0
    index: int = 0  # where the next token's key and value go in the slot
    position: int = 0  # its rotary position (index + the prompt's rope delta)


class Scheduler:
    """Owns the engine thread: admits jobs between steps, decodes all active jobs together."""

    def __init__(self, runner: ModelRunner, eos_ids: set[int]):
        self.runner = runner
        self.eos_ids = eos_ids
        self.waiting: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.active: list[Job | None] = [None] * runner.slots
        self.last_prefill: dict[str, float] = {}  # where the last first token's time went (benchmarks)
        # Where decoding's time goes (/health, bench/stream_bench.py): steps taken, seconds in them (to
        # the chosen tokens on the host), seconds handing their tokens to the requests; prompts
        # prefilled, seconds in them (to the first token on the host).
        self.steps, self.step_seconds, self.emit_seconds = 0, 0.0, 0.0
        self.prefills, self.prefill_seconds = 0, 0.0
        # A handover's new process may start with fewer KV cache slots than asked, to fit beside the
        # old one (handover.fit_slots): it grows to `wanted_slots` between steps once `room()` says
        # the rest fits, asked at most every GROW_CHECK_SECONDS.
        self.wanted_slots = runner.slots
        self.room: Callable[[int], bool] = lambda more_bytes: False
        self._grow_checked = 0.0
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.wake:
            self.waiting.append(job)
            self.wake.notify()

    @property
    def running(self) -> int:
        return sum(job is not None for job in self.active)

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                try:
                    self._admit()
                    if self.running:
                        self._decode()
                except Exception as exc:  # never let the engine thread die: every later request would hang
                    log.exception("the scheduler failed outside any one request")
                    for job in [job for job in self.active if job is not None]:
                        self._finish(job, exc)

    def grow_to(self, slots: int, room: Callable[[int], bool]) -> None:
        with self.wake:
            self.wanted_slots, self.room = slots, room
            self.wake.notify()

    def _grow(self) -> None:
        """To the slots asked for, once there is room for them (the old process gone)."""
        runner = self.runner
        if self.wanted_slots <= runner.slots:  # every step asks: nothing more once grown
            return
        now = time.monotonic()
        if now - self._grow_checked < GROW_CHECK_SECONDS:
            return
        self._grow_checked = now
        more = runner.cache_bytes // runner.slots * (self.wanted_slots - runner.slots)
        try:
            if not self.room(runner.cache_bytes + more):  # old and new cache side by side while copying
                return
            began = time.monotonic()
            had = runner.slots
            runner.resize(self.wanted_slots)
        except Exception:
            log.exception("the KV cache could not grow; it keeps its %d slots", runner.slots)
            self.wanted_slots = runner.slots
            return
        with self.wake:
            self.active.extend([None] * (runner.slots - len(self.active)))
        log.info(
            "KV cache grown",
            extra={"fields": {"slots": runner.slots, "had": had, "seconds": round(time.monotonic() - began, 3)}},
        )

    def _admit(self) -> None:
        self._grow()
        with self.wake:
            while not self.waiting and not self.running:
                if self.wanted_slots > self.runner.slots:
                    self.wake.wait(GROW_CHECK_SECONDS)
                    return  # back through _grow
                self.wake.wait()
            admitted = []
            while self.waiting and None in self.active:
                job = self.waiting.popleft()
                job.slot = self.active.index(None)
                self.active[job.slot] = job
                admitted.append(job)
        ready = []
        for job in admitted:
            if job.should_stop():
                self._finish(job)
            else:
                ready.append(job)
        # Prompts that arrived together are prefilled together (one pass over the weights), up to
        # PREFILL_TOKENS at a time; a failed group is tried one prompt at a time, so that a prompt
        # that cannot be prefilled fails its own request only.
        group: list[Job] = []
        tokens = 0
        for job in ready:
            length = int(job.inputs["input_ids"].shape[1])
            if group and tokens + length > PREFILL_TOKENS:
                self._prefill(group)
                group, tokens = [], 0
            group.append(job)
            tokens += length
        if group:
            self._prefill(group)

    def _prefill(self, jobs: list[Job]) -> None:
        import torch

        try:
            began = time.monotonic()
            inputs = [{k: v.to(self.runner.device) for k, v in job.inputs.items()} for job in jobs]
            moved = time.monotonic()
            results = self.runner.prefill_many([(each, job.slot) for each, job in zip(inputs, jobs, strict=True)])
            logits = torch.cat([each for each, _ in results])
            chosen = sample(logits, [j.temperature for j in jobs], [j.top_p for j in jobs]).tolist()
        except BaseException as exc:
            if len(jobs) > 1:
                for job in jobs:
                    self._prefill([job])
                return
            self._finish(jobs[0], exc)  # reported to its request; the others go on
            return
        now = time.monotonic()
        self.last_prefill = {"to_device_ms": 1000 * (moved - began), "prefill_ms": 1000 * (now - moved)}
        self.prefills += len(jobs)
        self.prefill_seconds += now - began
        for job, each, (_, delta), token in zip(jobs, inputs, results, chosen, strict=True):
            job.inputs.clear()
            job.index = int(each["input_ids"].shape[1])
            job.position = job.index + delta
            self._emit(job, int(token))

    def _decode(self) -> None:
        import torch

        began = time.perf_counter()
        jobs = [job for job in self.active if job is not None]
        rows = max(job.slot for job in jobs) + 1
        state = [[0] * rows for _ in range(3)]
        temperature, top_p = [0.0] * rows, [1.0] * rows
        for job in jobs:
            state[0][job.slot], state[1][job.slot], state[2][job.slot] = job.last_id, job.index, job.position
            temperature[job.slot], top_p[job.slot] = job.temperature, job.top_p
        try:
            self.runner.state[:, :rows].copy_(torch.tensor(state))
            logits = self.runner.run(rows, max(job.index for job in jobs) + 1)
            chosen = sample(logits[:rows], temperature, top_p).tolist()
        except BaseException as exc:  # a failed step fails the requests in it, never the thread
            for job in jobs:
                self._finish(job, exc)
            return
        stepped = time.perf_counter()
        for job in jobs:
            job.index += 1
            job.position += 1
            self._emit(job, chosen[job.slot])
        self.steps += 1
        self.step_seconds += stepped - began
        self.emit_seconds += time.perf_counter() - stepped

    def _emit(self, job: Job, token: int) -> None:
        job.last_id = token
        job.produced += 1
        job.sink.tokens([token])
        if job.index >= self.runner.context and token not in self.eos_ids:
            job.sink.truncated = True
        if (
            token in self.eos_ids
            or job.produced >= job.max_new_tokens
            or job.index >= self.runner.context
            or job.should_stop()
        ):
            self._finish(job)

    def _finish(self, job: Job, error: BaseException | None = None) -> None:
        job.inputs.clear()
        if job.slot >= 0 and self.active[job.slot] is job:
            self.active[job.slot] = None
        job.sink.done(error)
