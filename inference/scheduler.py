"""Continuous batching: one engine thread admits requests between steps and decodes every active
one in a single shared step (model_runner.py).

New requests join between steps; finished ones leave and free their slot at once, so nothing grows
with traffic.

On a GPU the next step is queued before the host reads this one's tokens, so that the device runs
it while the host hands the tokens to their requests (sharing the interpreter with the HTTP server's
thread: with 16 streams being written each step took 0.7 ms longer while the device waited for the
host, docs/BENCHMARKS.md). The queued step takes its input on the device, where this step chose it;
a request that finishes meanwhile leaves its row's token unread, its slot written one position past
its end, where nothing reads before writing.
"""

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from inference.model_runner import ModelRunner
from inference.sampler import Params, sample

log = logging.getLogger("inference.scheduler")
GROW_CHECK_SECONDS = 1.0
PREFILL_TOKENS = 8192  # the most prompt tokens prefilled in one pass (their activations at once)


@dataclass(eq=False)  # a job is itself: lists of jobs compare by identity
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


@dataclass
class Step:
    """A decoding step queued on the device, its tokens not read yet."""

    jobs: list[Job]  # the active jobs when it was queued, their state then
    rows: int
    params: Params
    advance: object  # [rows] added to each row's index and position for the step after: 0 on free slots
    chosen: object  # [rows] on the device
    host: object  # chosen, copied to the host once `ready`
    ready: object  # a CUDA event after the copy, or None on a CPU
    queued: float  # when it was queued (perf_counter)


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
        self.recorded_busy = 0  # prompt graphs recorded between steps (_record_due)
        # On a CPU a step runs as it is queued: queuing the next one first would only hold each token
        # back by a step (the tests turn it on there to run the same path as on a GPU).
        self.queue_ahead = runner.device.type == "cuda"
        self.pending: Step | None = None  # the step queued behind the last one read
        self.queued_ahead = 0  # steps queued behind another, their input its tokens on the device
        self._read = 0.0  # when the last step's tokens reached the host
        # A handover's new process may start with fewer KV cache slots than asked, to fit beside the
        # old one (handover.fit_slots): it grows to `wanted_slots` between steps once `room()` says
        # the rest fits, asked at most every GROW_CHECK_SECONDS.
        self.wanted_slots = runner.slots
        self.room: Callable[[int], bool] = lambda more_bytes: False
        self._grow_checked = 0.0
        # Decoding steps and prompt shapes without their graphs are recorded while no request runs, prompt
        # shapes also between steps once due (_record_due); not before the warm-up's own graphs are
        # (BatchedDecoder.after_warmup, on another thread, then record_later).
        self.record_graphs = False
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the thread once the step or recording under way is done. A process must not end with it
        inside CUDA: the interpreter's exit ends a daemon thread where it next takes the interpreter
        back, which from inside a CUDA graph's recording aborted the process (exit code 134, "terminate
        called without an active exception", on an H200 after a generation replayed the graphs)."""
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.thread.join(timeout)

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
            while not self.stopping:
                try:
                    self._admit()
                    if self.running:
                        self._decode()
                        self._record_due()
                except Exception as exc:  # never let the engine thread die: every later request would hang
                    log.exception("the scheduler failed outside any one request")
                    self.pending = None
                    for job in [job for job in self.active if job is not None]:
                        self._finish(job, exc)

    @contextlib.contextmanager
    def _unlocked(self):
        """The scheduler's lock let go for a while by its thread, which holds it once (in _admit)."""
        self.wake.release()
        try:
            yield
        finally:
            self.wake.acquire()

    def record_later(self) -> None:
        """From now on, graphs are recorded by this thread when idle (the warm-up's are recorded)."""
        with self.wake:
            self.record_graphs = True
            self.wake.notify()

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

    def _record_due(self) -> None:
        """Between steps, with requests decoding: record the prompt shapes whose eager passes have cost
        as much as their recording (runner.graphs_due), into a free slot, while nobody waits for one.
        A server that is never idle would otherwise run every prompt eagerly for as long as it runs;
        the steps in flight wait for the recording, once a shape (0.2-0.4 s with 16 streams on an H200,
        docs/BENCHMARKS.md)."""
        if not self.record_graphs or not self.runner.graphs_wanted or self.waiting:
            return
        free = next((slot for slot, job in enumerate(self.active) if job is None), None)
        due = self.runner.graphs_due()[:1]  # one a step: three at once held the streams 1.3 s on an H200
        if free is None or not due:
            return
        self.runner.record_wanted(slot=free, shapes=due)
        self.recorded_busy += 1

    def _admit(self) -> None:
        self._grow()
        with self.wake:
            while not self.waiting and not self.running:
                if self.stopping:
                    return
                if self.record_graphs and (self.runner.common_missing or self.runner.graphs_wanted):
                    # Without the lock: a request arriving meanwhile is queued (its thread, the server's
                    # event loop, not held up), then admitted after this one graph (~0.05 s) or these
                    # prompt shapes (~0.1 s each).
                    with self._unlocked():
                        if not self.runner.record_next_common():
                            self.runner.record_wanted()
                    continue
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
            device = self.runner.device
            inputs = [
                {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in job.inputs.items()} for job in jobs
            ]
            moved = time.monotonic()
            results = self.runner.prefill_many([(each, job.slot) for each, job in zip(inputs, jobs, strict=True)])
            logits = torch.cat([each for each, _ in results])
            params = Params.of([j.temperature for j in jobs], [j.top_p for j in jobs], logits.device)
            chosen = sample(logits, params).tolist()
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
        """Reads the queued step's tokens, or queues a step of the active jobs and reads it; queues the
        next step first when it would run the same jobs."""
        jobs = [job for job in self.active if job is not None]
        step, self.pending = self.pending, None
        try:
            if step is None:
                step = self._queue_from_host(jobs)
            following = self._queue_following(step) if self._may_follow(step, jobs) else None
        except BaseException as exc:  # a failed step fails the requests in it, never the thread
            for job in jobs:
                self._finish(job, exc)
            return
        self.pending = following
        self.queued_ahead += following is not None
        self._settle(step)

    def _queue_from_host(self, jobs: list[Job]) -> Step:
        import torch

        rows = max(job.slot for job in jobs) + 1
        state = [[0] * rows for _ in range(3)]
        advance = [0] * rows
        temperature, top_p = [0.0] * rows, [1.0] * rows
        for job in jobs:
            state[0][job.slot], state[1][job.slot], state[2][job.slot] = job.last_id, job.index, job.position
            temperature[job.slot], top_p[job.slot] = job.temperature, job.top_p
            advance[job.slot] = 1
        device = self.runner.device
        self.runner.state[:, :rows].copy_(torch.tensor(state))
        params = Params.of(temperature, top_p, device)
        advance = torch.tensor(advance, device=device)
        return self._queue(jobs, rows, max(job.index for job in jobs) + 1, params, advance)

    def _may_follow(self, step: Step, jobs: list[Job]) -> bool:
        """Whether to queue the next step before reading this one: the same jobs, nobody waiting to
        join, every row's next position inside its slot, and a job that may go on."""
        return (
            self.queue_ahead
            and step.jobs == jobs
            and not self.waiting
            and all(job.index + 1 < self.runner.context for job in jobs)
            and any(job.produced + 1 < job.max_new_tokens for job in jobs)
        )

    def _queue_following(self, step: Step) -> Step:
        """The step after `step`, its input taken on the device from `step`'s chosen tokens."""
        state = self.runner.state
        state[0, : step.rows].copy_(step.chosen)
        state[1:, : step.rows] += step.advance
        return self._queue(step.jobs, step.rows, max(job.index for job in step.jobs) + 2, step.params, step.advance)

    def _queue(self, jobs: list[Job], rows: int, need_length: int, params: Params, advance) -> Step:
        import torch

        queued = time.perf_counter()
        logits = self.runner.run(rows, need_length)
        chosen = sample(logits[:rows], params)
        ready = None
        if chosen.is_cuda:  # copied to pinned memory without waiting for what is queued after it
            host = chosen.to("cpu", non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        else:
            host = chosen
        return Step(jobs, rows, params, advance, chosen, host, ready, queued)

    def _settle(self, step: Step) -> None:
        """Hands `step`'s tokens to its jobs still running."""
        try:
            if step.ready is not None:
                step.ready.synchronize()
            chosen = step.host.tolist()
        except BaseException as exc:
            self.pending = None
            for job in step.jobs:
                if self.active[job.slot] is job:
                    self._finish(job, exc)
            return
        read = time.perf_counter()
        self.steps += 1
        self.step_seconds += read - max(step.queued, self._read)
        for job in step.jobs:
            if self.active[job.slot] is not job:  # finished since the step was queued
                continue
            job.index += 1
            job.position += 1
            self._emit(job, chosen[job.slot])
        self._read = time.perf_counter()
        self.emit_seconds += self._read - read

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
