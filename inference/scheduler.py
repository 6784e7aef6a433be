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
        for job in admitted:
            try:
                if job.should_stop():
                    self._finish(job)
                    continue
                began = time.monotonic()
                inputs = {k: v.to(self.runner.device) for k, v in job.inputs.items()}
                job.inputs.clear()
                moved = time.monotonic()
                logits, delta = self.runner.prefill(inputs, job.slot)
                job.index = int(inputs["input_ids"].shape[1])
                job.position = job.index + delta
                del inputs  # pixels and ids are in the cache now
                token = int(sample(logits, [job.temperature], [job.top_p])[0])
                self.last_prefill = {
                    "to_device_ms": 1000 * (moved - began),
                    "prefill_ms": 1000 * (time.monotonic() - moved),
                }
                self._emit(job, token)
            except BaseException as exc:  # reported to its request; the others go on
                self._finish(job, exc)

    def _decode(self) -> None:
        import torch

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
        for job in jobs:
            job.index += 1
            job.position += 1
            self._emit(job, chosen[job.slot])

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
