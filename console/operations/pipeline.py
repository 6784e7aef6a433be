"""The restart pipeline: the steps of every operation, written once.

The button, the API, the CLI, schedules and the watchdog all end here, via
the worker task in tasks.py. Each step returns a sentence for the operator or
raises StepFailed with the reason.
"""

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from console.host import gpu
from console.host.engines import server_for
from console.host.identity import worker_identity
from console.host.runtime import Runtime, RuntimeFailure
from console.host.runtimes import runtime_for
from console.host.server import ModelServer, NoAnswer, NotOffered, ServerError, listed
from console.operations import progress
from console.operations.models import Operation
from console.sentences import Sentence, Sentences, gettext_noop
from console.telemetry.latest import is_fresh
from console.telemetry.models import Sample

log = logging.getLogger(__name__)

# A worker lost this many times while running one operation means something
# about the operation itself kills workers: stop retrying it.
MAX_ATTEMPTS = 3
RELEASE_TIMEOUT = 20.0
LOG_TAIL_LINES = 40
SUPERVISOR_SAMPLES = 50  # how far back a handover looks for the sample that named the supervisor


class StepFailed(Exception):
    """A step could not do its job; the message is the operator's explanation."""


def _said(exc: Exception) -> str:
    """An exception's message, as a Sentence where it was raised with one."""
    message = exc.args[0] if exc.args else ""
    return message if isinstance(message, Sentence | Sentences) else str(exc)


@dataclass
class Context:
    operation: Operation
    instance: object
    runtime: Runtime
    server: ModelServer
    old_pids: list[int] = field(default_factory=list)
    fenced: threading.Event = field(default_factory=threading.Event)
    # Set by a step that did something else than its name says (a restart in place done whole).
    step_name: str | None = None

    def check(self) -> None:
        """Stop at once when another attempt has taken the operation over."""
        if self.fenced.is_set():
            raise progress.Fenced(f"operation #{self.operation.pk} was taken over by another attempt")


def drain(ctx: Context) -> str:
    if not ctx.runtime.status(ctx.instance).running:
        return Sentence(gettext_noop("not running; nothing to drain"))
    refused = ctx.server.drain()
    if refused:
        return Sentence(gettext_noop("server %(refused)s; stopping without drain"), refused=refused)
    began = time.monotonic()
    deadline = began + ctx.instance.drain_timeout
    in_flight = None
    while time.monotonic() < deadline:
        ctx.check()
        in_flight = ctx.server.in_flight()
        if in_flight == 0 or in_flight is None:
            break
        time.sleep(0.2)
    waited = time.monotonic() - began
    if in_flight:
        return Sentence(
            gettext_noop("%(count)d requests still in flight after %(seconds).1f s; stopping anyway"),
            count=in_flight,
            seconds=waited,
        )
    return Sentence(gettext_noop("drained: no request in flight after %(seconds).1f s"), seconds=waited)


def stop(ctx: Context) -> str:
    ctx.old_pids = ctx.runtime.status(ctx.instance).pids
    result = ctx.runtime.stop(ctx.instance, timeout=ctx.instance.stop_timeout)
    return result.detail


def release(ctx: Context) -> str:
    """Check the old processes are gone and hold no GPU memory any more."""
    if ctx.runtime.status(ctx.instance).running:
        raise StepFailed(Sentence(gettext_noop("the instance is still running after stop")))
    pids = ", ".join(map(str, ctx.old_pids))
    note = (
        Sentence(gettext_noop("processes %(pids)s gone"), pids=pids)
        if ctx.old_pids
        else Sentence(gettext_noop("no processes left"))
    )
    return _gpu_released(ctx, ctx.old_pids, note)


def _gpu_released(ctx: Context, pids, note: str) -> str:
    """`note`, once the processes `pids` (ended) hold no GPU memory any more."""
    if not gpu.nvml_available():
        return Sentences([note, Sentence(gettext_noop("%(why)s: GPU memory not checked"), why=gpu.nvml_error())])
    began = time.monotonic()
    while True:
        ctx.check()
        holding = [p for p in gpu.processes(ctx.instance.gpu_indices or None) if p.pid in pids]
        if not holding:
            released = Sentence(
                gettext_noop("GPU memory released after %(seconds).1f s"), seconds=time.monotonic() - began
            )
            return Sentences([note, released])
        if time.monotonic() - began > RELEASE_TIMEOUT:
            held = sum(p.used_bytes for p in holding) / 2**30
            each = ", ".join(f"pid {p.pid}: {p.used_bytes / 2**20:.0f} MiB" for p in holding)
            raise StepFailed(
                Sentence(
                    gettext_noop(
                        "old processes still hold %(gib).1f GiB of GPU memory after %(seconds).0f s (%(each)s)"
                    ),
                    gib=held,
                    seconds=RELEASE_TIMEOUT,
                    each=each,
                )
            )
        time.sleep(0.5)


def restart_in_place(ctx: Context) -> str:
    """A fresh model process from the server's supervisor (inference.supervisor), which keeps the
    imports: seconds instead of a whole start. A server that cannot (not supervised, not answering,
    its old process not ending) is stopped and started instead, so the restart still happens."""
    ctx.old_pids = ctx.runtime.status(ctx.instance).pids
    try:
        old_pid = ctx.server.restart_in_place()
    except ServerError as exc:
        return _restart_whole(ctx, Sentence(gettext_noop("in place refused: %(why)s"), why=_said(exc)))
    replaced = _replaced(ctx, old_pid, time.monotonic())
    if replaced is None:
        why = Sentence(gettext_noop("model process %(pid)s did not end in time"), pid=old_pid)
        return _restart_whole(ctx, why)
    return replaced


def _replaced(ctx: Context, old_pid: int | None, began: float) -> str | None:
    """Once a process other than old_pid serves: what happened, the old processes' GPU memory
    checked; None if that took longer than a drain and a stop may."""
    deadline = began + ctx.instance.drain_timeout + ctx.instance.stop_timeout
    while time.monotonic() < deadline:
        ctx.check()
        # The supervisor forks the new process only once the old one has ended.
        pid = ctx.server.serving_pid()
        if pid is not None and pid != old_pid:
            gone = sorted(set(ctx.old_pids) - set(ctx.runtime.status(ctx.instance).pids))
            note = Sentence(
                gettext_noop("model process %(old)s replaced by %(new)s after %(seconds).1f s"),
                old=old_pid,
                new=pid,
                seconds=time.monotonic() - began,
            )
            return _gpu_released(ctx, gone, note)
        status = ctx.runtime.status(ctx.instance)
        if not status.running:
            raise StepFailed(
                Sentence(gettext_noop("the server %(state)s during its restart in place"), state=status.detail)
            )
        time.sleep(0.2)
    return None


def _restart_whole(ctx: Context, why: str, drained: bool = True) -> str:
    """Stop and start in the restart-in-place or handover step, which is then named for what it did."""
    if drained:
        ctx.step_name = Sentence(gettext_noop("restart (whole: in place not possible — %(why)s)"), why=why)
        return Sentences([step(ctx) for step in (stop, release, start)])
    ctx.step_name = Sentence(gettext_noop("restart (whole: handover not possible — %(why)s)"), why=why)
    return Sentences([step(ctx) for step in (drain, stop, release, start)])


# The supervisor's phase names (inference/handover.py), as the pages say them.
HANDOVER_PHASES = {
    "new process started": gettext_noop("new process %(pid)s started at %(seconds).1f s"),
    "standby taking over": gettext_noop(
        "standby process %(pid)s, loaded ahead in %(load).1f s, taking over at %(seconds).1f s"
    ),
    "standby taking over once loaded": gettext_noop(
        "standby process %(pid)s, still loading at %(seconds).1f s, takes over once loaded"
    ),
    "reading new weights": gettext_noop(
        "the checkpoint changed: new weight holder %(pid)s reading it at %(seconds).1f s"
    ),
    "reloading weights": gettext_noop(
        "weights reload asked for: new weight holder %(pid)s reading them at %(seconds).1f s"
    ),
    "new weights held": gettext_noop("new weight holder %(pid)s read the checkpoint in %(load).1f s"),
    "new weights failed": gettext_noop(
        "the changed checkpoint could not be read (code %(code)s) at %(seconds).1f s: the old weights still serve"
    ),
    "new weights unreadable": gettext_noop(
        "the changed checkpoint no longer looked whole once the old process was gone (%(why)s) at"
        " %(seconds).1f s: the old weights serve the new process"
    ),
    "smaller kv cache": gettext_noop(
        "new process %(pid)s fits beside the old one with %(slots)s of %(wanted)s KV cache slots (it grows back"
        " once the old one is gone)"
    ),
    "weights mapped": gettext_noop("new process %(pid)s mapped the held weights in %(load).1f s"),
    "new process serving": gettext_noop("new process %(pid)s serving at %(seconds).1f s (loaded in %(load).1f s)"),
    "old process draining": gettext_noop("old process %(pid)s draining at %(seconds).1f s"),
    "old process gone": gettext_noop("old process %(pid)s gone at %(seconds).1f s"),
    "old weights released": gettext_noop("old weight holder %(pid)s ended at %(seconds).1f s: the old weights freed"),
    "old process killed": gettext_noop("old process %(pid)s killed at %(seconds).1f s: it outlived its drain"),
    "fallback: drained restart": gettext_noop("no room for a handover at %(seconds).1f s: %(why)s"),
    "fallback refused": gettext_noop(
        "no room for a handover, and no restart either at %(seconds).1f s: %(why)s; the old process still serves"
    ),
    "failed": gettext_noop("new process %(pid)s ended with code %(code)s at %(seconds).1f s"),
}


def _count(value) -> int | str:
    return value if isinstance(value, int) and not isinstance(value, bool) else "?"


def _phases(record: dict) -> Sentences:
    """The handover's phases as sentences, from its record as ModelServer.handover_record shapes it."""
    said = []
    for phase in record.get("phases") or []:
        template = HANDOVER_PHASES.get(phase["name"])
        seconds = phase["seconds"] or 0
        if template is None:  # a phase this console does not know yet
            said.append(Sentence(gettext_noop("%(phase)s at %(seconds).1f s"), phase=phase["name"], seconds=seconds))
            continue
        said.append(
            Sentence(
                template,
                pid=_count(phase["pid"]),
                seconds=seconds,
                load=phase["load_seconds"] or 0,
                why=phase["why"],
                code=phase["exit_code"],
                slots=_count(phase["slots"]),
                wanted=_count(phase["wanted"]),
            )
        )
    return Sentences(said)


def _recent_samples(ctx: Context):
    """The instance's newest raw samples, newest first (a query, read where it is used)."""
    return Sample.objects.filter(instance=ctx.instance, resolution=Sample.RAW).order_by("-at")[:SUPERVISOR_SAMPLES]


def _ask_supervisor(ctx: Context, hung: bool = False) -> Sentence | None:
    """SIGUSR1 to the instance's supervisor, when a sample named it (the latest ones, of a hung process,
    name nobody) and it is still the instance's main process, which the runtime checks (the pid and
    start it launched, or a container's first process); what was done, or None. `hung`: asked because
    the samples show the model process hung, not after a request of its own went unanswered."""
    recent = _recent_samples(ctx)
    pid = next((s.data.get("supervisor_pid") for s in recent if isinstance(s.data.get("supervisor_pid"), int)), None)
    if pid is None:
        return None
    try:
        if not ctx.runtime.signal_supervisor(ctx.instance, pid, signal.SIGUSR1):
            return None
    except RuntimeFailure:
        return None
    if hung:
        return Sentence(
            gettext_noop("the model process did not answer the last probe: handover asked of its supervisor (SIGUSR1)")
        )
    return Sentence(gettext_noop("the model process did not answer: handover asked of its supervisor (SIGUSR1)"))


def _hung(ctx: Context) -> bool:
    """The newest sample, a fresh one, waited for /health in vain: the model process hangs, and would
    not answer the handover's request either."""
    newest = _recent_samples(ctx).first()
    return is_fresh(newest) and newest.data.get("probe_timed_out") is True


def handover(ctx: Context) -> str:
    """A new model process beside the old one, which drains once the new one serves
    (inference.supervisor): nobody is refused. Where the server offers none, a drained whole restart;
    where the supervisor finds no room for two models, its drained restart in place."""
    ctx.old_pids = ctx.runtime.status(ctx.instance).pids
    asked_at = time.time() - 1
    reload = bool(ctx.operation.options.get("reload_weights"))
    # A hung model process cannot answer; its supervisor can still start a new one (SIGUSR1), and
    # will kill the hung one once it outlives its drain. Where the samples show it hung, the
    # supervisor is asked at once rather than after the request's timeout (a signal cannot carry a
    # weights reload: that one is asked by request).
    signalled = _ask_supervisor(ctx, hung=True) if not reload and _hung(ctx) else None
    handover_id = None
    if signalled is None:
        try:
            handover_id = ctx.server.handover(reload_weights=reload)
        except NoAnswer as exc:
            signalled = _ask_supervisor(ctx)
            if signalled is None:
                return _restart_whole(ctx, _said(exc), drained=False)
        except ServerError as exc:
            return _restart_whole(ctx, _said(exc), drained=False)
    if signalled is not None:
        progress.note_step(ctx.operation, signalled)
    began = time.monotonic()
    deadline = began + ctx.instance.ready_timeout + ctx.instance.drain_timeout + ctx.instance.stop_timeout
    shown = 0
    while time.monotonic() < deadline:
        ctx.check()
        record = ctx.server.handover_record(handover_id, since=asked_at) or {}
        phases = _phases(record)
        if signalled is not None:
            phases = Sentences([signalled, *phases.parts])
        if len(phases.parts) != shown:
            shown = len(phases.parts)
            progress.note_step(ctx.operation, phases)
        state = record.get("state")
        if state == "done":
            return _gpu_released(ctx, [record.get("old_pid")], phases)
        if state == "failed":
            why = Sentence(gettext_noop("handover failed: %(why)s"), why=record["why"])
            raise StepFailed(Sentences([*phases.parts, why]))
        if state == "fallback":
            ctx.step_name = Sentence(gettext_noop("restart in place (no room for a handover)"))
            replaced = _replaced(ctx, record.get("old_pid"), began)
            if replaced is None:
                late = Sentence(gettext_noop("the old process did not end in time"))
                raise StepFailed(Sentences([*phases.parts, late]))
            # The supervisor may have found the new weights unreadable before the new process.
            record = ctx.server.handover_record(handover_id, since=asked_at) or record
            phases = _phases(record)
            if record.get("state") == "failed":
                why = Sentence(gettext_noop("handover failed: %(why)s"), why=record["why"])
                raise StepFailed(Sentences([*phases.parts, replaced, why]))
            return Sentences([*phases.parts, replaced])
        status = ctx.runtime.status(ctx.instance)
        if not status.running:
            raise StepFailed(Sentence(gettext_noop("the server %(state)s during its handover"), state=status.detail))
        time.sleep(0.2)
    raise StepFailed(
        Sentences(
            [
                *phases.parts,
                Sentence(gettext_noop("the handover did not end in %(seconds).0f s"), seconds=time.monotonic() - began),
            ]
        )
    )


def start(ctx: Context) -> str:
    recreate = bool(ctx.operation.options.get("recreate"))
    status = ctx.runtime.status(ctx.instance)
    if status.running and not recreate:
        return Sentence(gettext_noop("already running (%(state)s)"), state=status.detail)
    return ctx.runtime.start(ctx.instance, recreate=recreate)


def wait_ready(ctx: Context) -> str:
    began = time.monotonic()
    deadline = began + ctx.instance.ready_timeout
    delay = 0.1
    last = "no answer yet"
    while time.monotonic() < deadline:
        ctx.check()
        readiness = ctx.server.readiness()
        if readiness.ready:
            return Sentence(gettext_noop("ready after %(seconds).1f s"), seconds=time.monotonic() - began)
        if readiness.failed:
            raise StepFailed(
                Sentence(
                    gettext_noop("the server could not load its model (state 'failed'): %(why)s"),
                    why=readiness.answer or Sentence(gettext_noop("see the log tail")),
                )
            )
        last = readiness.answer
        status = ctx.runtime.status(ctx.instance)
        if not status.running:
            raise StepFailed(Sentence(gettext_noop("the server %(state)s before it became ready"), state=status.detail))
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)  # a local GET is cheap; a long pause would only delay "ready"
    raise StepFailed(
        Sentence(
            gettext_noop("not ready after %(seconds)s s (last answer: %(last)s)"),
            seconds=ctx.instance.ready_timeout,
            last=last,
        )
    )


def verify(ctx: Context) -> str:
    """The server answers for its models (GET /v1/models), or, where it offers no such list, is
    still ready a moment later (docs/ENGINES.md: the server contract)."""
    try:
        models = ctx.server.models()
    except NotOffered as exc:
        readiness = ctx.server.readiness()
        if not readiness.ready:
            raise StepFailed(
                Sentence(
                    gettext_noop("%(why)s, and /health/ready answered %(answer)s right after"),
                    why=_said(exc),
                    answer=readiness.answer,
                )
            ) from exc
        return Sentence(gettext_noop("still ready (%(why)s)"), why=_said(exc))
    except ServerError as exc:
        raise StepFailed(Sentence(gettext_noop("%(why)s right after becoming ready"), why=_said(exc))) from exc
    if not models:
        return Sentence(gettext_noop("serving requests"))
    return Sentence(gettext_noop("serving %(models)s"), models=listed(models))


def soft_reset(ctx: Context) -> str:
    try:
        body = ctx.server.soft_reset()
    except ServerError as exc:
        raise StepFailed(_said(exc)) from exc
    if body.get("prefix_cache_reset"):  # vLLM
        return Sentences([part for part in (Sentence(gettext_noop("prefix cache reset")), body.get("sleep")) if part])
    before, after = body.get("reserved_before"), body.get("reserved_after")
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return Sentence(gettext_noop("soft reset done"))
    return Sentence(
        gettext_noop("reserved memory %(before).0f MiB -> %(after).0f MiB"), before=before / 2**20, after=after / 2**20
    )


DRAIN, STOP, RELEASE, START, READY, VERIFY = (
    Sentence(gettext_noop("drain")),
    Sentence(gettext_noop("stop")),
    Sentence(gettext_noop("release")),
    Sentence(gettext_noop("start")),
    Sentence(gettext_noop("ready")),
    Sentence(gettext_noop("verify")),
)
STEPS = {
    Operation.Kind.RESTART: [
        (DRAIN, drain),
        (STOP, stop),
        (RELEASE, release),
        (START, start),
        (READY, wait_ready),
        (VERIFY, verify),
    ],
    Operation.Kind.START: [(START, start), (READY, wait_ready), (VERIFY, verify)],
    Operation.Kind.STOP: [(DRAIN, drain), (STOP, stop), (RELEASE, release)],
    Operation.Kind.SOFT_RESET: [(Sentence(gettext_noop("soft reset")), soft_reset)],
}
RESTART_IN_PLACE = [
    (DRAIN, drain),
    (Sentence(gettext_noop("restart in place")), restart_in_place),
    (READY, wait_ready),
    (VERIFY, verify),
]


HANDOVER = [
    (Sentence(gettext_noop("handover")), handover),
    (READY, wait_ready),
    (VERIFY, verify),
]


def steps_for(operation: Operation) -> list:
    # A new container is a whole restart by definition.
    if operation.kind == Operation.Kind.RESTART and not operation.options.get("recreate"):
        if operation.instance.handover:
            return HANDOVER  # with reload_weights, a new weight holder reads them
        # A restart in place maps the weights its supervisor's holder keeps: reloading them is a
        # whole restart (the holder ends with the supervisor).
        if operation.instance.restart_in_place and not operation.options.get("reload_weights"):
            return RESTART_IN_PLACE
    return STEPS[operation.kind]


class Busy(Exception):
    """Another live worker is running this operation: this delivery has nothing to do."""


def claim(operation_id: int) -> Operation | None:
    """Mark the operation running and count the attempt, which fences every later write (see
    progress); None if it is already finished.

    A running operation is taken over only when its worker's heartbeat is stale, so a second
    delivery never runs it twice at once.
    """
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CONSOLE_HEARTBEAT_STALE_SECONDS)
    with transaction.atomic():
        operation = (
            Operation.objects.select_for_update(of=("self",))
            .select_related("instance__host", "requested_by")
            .filter(pk=operation_id)
            .first()
        )
        if operation is None or operation.is_finished:
            return None
        alive = operation.state == Operation.State.RUNNING and operation.heartbeat and operation.heartbeat >= stale
        if alive:
            raise Busy(operation_id)
        operation.attempts += 1
        operation.state, operation.started, operation.heartbeat = Operation.State.RUNNING, operation.started or now, now
        operation.worker = worker_identity()
        Operation.objects.filter(pk=operation_id).update(
            state=operation.state,
            attempts=operation.attempts,
            started=operation.started,
            heartbeat=now,
            worker=operation.worker,
        )
    return operation


class Heartbeat:
    """Writes the operation's heartbeat every few seconds while its attempt owns it; `fenced` is set
    once another attempt has taken it over."""

    def __init__(self, operation: Operation, every: float = 5.0):
        self.operation_id, self.attempt, self.every = operation.pk, operation.attempts, every
        self.stopped, self.fenced = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{operation.pk}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self.stopped.wait(self.every):
                try:
                    mine = Operation.objects.filter(
                        pk=self.operation_id, state=Operation.State.RUNNING, attempts=self.attempt
                    )
                    if not mine.update(heartbeat=Now()) and self._taken_over():
                        self.fenced.set()
                        return
                except DatabaseError:
                    connection.close()  # the database is restarting: beat again once it is back
        finally:
            connection.close()

    def _taken_over(self) -> bool:
        """Another attempt owns the operation, or it was ended without this one (a row this
        connection cannot see yet, as inside a test's transaction, is neither)."""
        row = Operation.objects.filter(pk=self.operation_id).values_list("attempts", "state").first()
        return row is not None and row != (self.attempt, Operation.State.RUNNING)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def execute(operation_id: int) -> Operation | None:
    """Run an operation to its end. Safe to call again for the same id (a second delivery).

    Raises Busy while another live worker runs it.
    """
    operation = claim(operation_id)
    if operation is None:
        return None  # finished already: a duplicate delivery does nothing
    with Heartbeat(operation, every=min(5.0, settings.CONSOLE_HEARTBEAT_STALE_SECONDS / 3)) as heartbeat:
        try:
            return _run(operation, heartbeat.fenced)
        except progress.Fenced as exc:
            log.warning("operation %s: %s; this worker stops driving it", operation.pk, exc)
            return None


def _run(operation: Operation, fenced: threading.Event) -> Operation:
    planned = steps_for(operation)
    if operation.attempts > 1:
        planned = _resume(operation, planned)
    if operation.attempts > MAX_ATTEMPTS:
        gave_up = Sentence(gettext_noop("gave up after %(count)d workers were lost running it"), count=MAX_ATTEMPTS)
        progress.finish(operation, Operation.State.FAILED, gave_up)
        return operation
    instance = operation.instance
    progress.announce(operation)
    try:
        runtime = runtime_for(instance)
        # Before anything changes: a recreate that could not rebuild the container is refused.
        problem = operation.options.get("recreate") and runtime.recreate_problem(instance)
        if problem:
            progress.finish(
                operation, Operation.State.FAILED, Sentence(gettext_noop("recreate refused: %(why)s"), why=problem)
            )
            return operation
    except RuntimeFailure as exc:
        progress.finish(operation, Operation.State.FAILED, _said(exc))
        return operation
    with server_for(instance) as server:
        ctx = Context(operation=operation, instance=instance, runtime=runtime, server=server, fenced=fenced)
        for name, action in planned:
            ctx.check()
            step = progress.begin_step(operation, name)
            try:
                detail = action(ctx)
            except (StepFailed, RuntimeFailure) as exc:
                failure = _said(exc)
            except (DatabaseError, progress.Fenced):
                raise  # the database is away (the task retries and resumes) or another attempt owns it
            except Exception as exc:
                log.exception("operation %s: step %s crashed", operation.pk, name)
                failure = Sentence(gettext_noop("internal error: %(why)s"), why=str(exc))
            else:
                progress.end_step(operation, step, "done", detail, name=ctx.step_name)
                ctx.step_name = None
                continue
            name = ctx.step_name or name
            progress.end_step(operation, step, "failed", failure, name=name)
            error = Sentence(gettext_noop("%(step)s: %(why)s"), step=name, why=failure)
            progress.finish(operation, Operation.State.FAILED, error, _log_tail(ctx))
            return operation
    progress.finish(operation, Operation.State.SUCCEEDED)
    return operation


def _resume(operation: Operation, planned: list) -> list:
    """The steps left for an operation taken over from a lost worker: those its earlier attempts
    did not finish (a step cut short is done again; each checks the state first)."""
    recorded = [s for s in operation.steps if s["name"] != "resume"]
    done = [s["name"] for s in recorded if s["state"] == "done"]
    cut = [{**s, "state": "interrupted"} if s["state"] == "running" else s for s in operation.steps]
    progress.write_steps(operation, cut)
    left = planned[len(done) :]
    step = progress.begin_step(operation, Sentence(gettext_noop("resume")))
    parts = [
        Sentence(
            gettext_noop("picked up again (attempt %(attempt)d) after the worker running it was lost"),
            attempt=operation.attempts,
        )
    ]
    if done:
        parts.append(Sentence(gettext_noop("done before: %(steps)s"), steps=", ".join(done)))
    if left:
        parts.append(Sentence(gettext_noop("going on from %(step)s"), step=left[0][0]))
    progress.end_step(operation, step, "done", Sentences(parts))
    return left


def _log_tail(ctx: Context) -> str:
    try:
        return "\n".join(ctx.runtime.log_tail(ctx.instance, LOG_TAIL_LINES))
    except Exception:  # the reason matters more than the tail
        return ""
