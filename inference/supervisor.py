"""The model server under a parent that keeps its imports and its listening socket, so a restart
skips the imports and a handover loses no request.

    MODEL_PATH=/models/glm-4.6v-flash python -m inference.supervisor

Most of a server's start is importing torch and transformers (docs/BENCHMARKS.md). The supervisor
binds the server's port itself, forks the server (inference.server) as its child at once, then
imports them, never touching the GPU. Every model process it forks serves that one socket, and
inherits what the supervisor made ready after its imports: the tokenizer and image processor
(inference/processors.py), Triton's look-ups (inference/ops) and the model's skeleton
(inference/assembly.py).

- `POST /admin/restart` drains the child and ends it; the supervisor forks a fresh one, which starts
  with everything imported: a new CUDA context, allocator, KV cache and set of connections, as after
  a restart of the container, in the time of the load alone. Connections that arrive meanwhile wait
  in the socket's backlog instead of being refused.
- `POST /admin/handover` (SIGUSR1 to the supervisor) forks the new process *beside* the old one: it
  loads and warms up its model, then accepts on the shared socket; only then does the old one stop
  accepting (SIGUSR2), finish its in-flight requests and exit. Nobody is refused. A new process that
  finds no room for a second model (inference/handover.py) exits at once and the supervisor restarts
  the old one the drained way instead (SIGHUP), unless the checkpoint's config would not load in a
  fresh process either; one that fails to load leaves the old one serving.
  The phases go to a small JSON record that every model process reports in its /health.

With a weight holder (HOLD_WEIGHTS, inference/holder.py: by default on a GPU) the supervisor first
forks the holder, which reads the weights onto the device once and keeps them; every model process
maps them from it instead of reading them, so a handover's new process skips the weights and the pair
needs them only once. The holder outlives every model process; its death ends the supervisor as a
crash (the weights the serving process reads are gone with it), which the console sees. A handover
after the checkpoint's files changed starts a second holder on the new files; the new process maps
its weights, and the first holder ends once the old process is gone (if the new files cannot be read,
the handover fails and the old weights go on serving).

(The first child imports for itself, in parallel with the supervisor, and reads the weights
meanwhile, as a server without a supervisor does: a child forked after the import would read them
only then.)

With HANDOVER_STANDBY the supervisor keeps a standby: once the serving process is ready (and any old
one gone), it forks another model process that loads and warms up as a handover's new process does,
says so, and waits without serving. The next handover hands it the socket at once: it serves a
fraction of a second after the request instead of its load's seconds later, and the old process
drains as before. A standby stays as fresh as a new process (it has served nothing); one that loaded
files that changed since, or a handover that reads the weights again, discards it and takes the usual
way. A standby that fails is recorded and not tried again until the next process serves.

SIGTERM and SIGINT go to the children (which drain, as without a supervisor); the supervisor then
exits with the serving child's code. A serving child that ends any other way (a crash, an exit of
its own) ends the supervisor with its code too, so the container's restart policy and the console
see it, rather than a supervisor quietly restarting a broken server.
"""

import dataclasses
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

from inference import assembly, engine, handover, holder, logs, processors, weights
from inference.ops import prepare_triton
from inference.settings import Settings

log = logging.getLogger("inference.supervisor")

RESTART_EXIT = 75  # the child's exit code that asks for a fresh child (EX_TEMPFAIL)
SUPERVISOR_ENV = "INFERENCE_SUPERVISOR_PID"  # set in the child: /admin/restart and /admin/handover are offered
LISTEN_BACKLOG = 2048  # connections wait here while no model process accepts (a restart's load)
POLL_SECONDS = 0.05  # between looks at the holders and deadlines; signals and the children's words wake it at once
RETIRE_GRACE_SECONDS = 10  # beyond DRAIN_TIMEOUT, for an old process to end after a handover


@dataclasses.dataclass
class HolderProcess:
    """A weight holder the supervisor forked: its pid, the read end of its pipe, its socket, the
    checkpoint's files when it began reading them (holder.stamp) and, once it holds them, what."""

    pid: int
    says: int
    path: str
    stamp: list
    held: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StandbyProcess:
    """A model process loaded ahead (HANDOVER_STANDBY): its pid, the read end of its pipe, the write end
    of the one it waits on, the checkpoint's files when it began loading, and once it is ready, its load."""

    pid: int
    says: int
    go: int
    stamp: list
    ready: bool = False
    load_seconds: float = 0.0
    why: str = ""


def checkpoint_files(model_path: str) -> list:
    """Every file of the checkpoint as holder.stamp sees it: a standby loaded from others is stale."""
    return holder.stamp(model_path, lambda path: path.is_file())


def preload() -> None:
    """Import what a server spends most of its start on. Nothing here may start CUDA: a child
    forked from a process that did cannot use the GPU. (PyTorch's DataLoader forks its workers
    from processes that imported torch in the same way.)"""
    import torch  # noqa: F401

    # What uvicorn imports as it starts serving (else imported by every handover's new process
    # between its ready and its serving), and the chat endpoint's modules.
    import uvicorn.lifespan.on  # noqa: F401
    import uvicorn.protocols.http.auto  # noqa: F401
    import uvicorn.protocols.websockets.auto  # noqa: F401
    from transformers import (  # noqa: F401
        AutoConfig,
        AutoImageProcessor,
        AutoTokenizer,
        GenerationConfig,
        Glm4vForConditionalGeneration,
    )
    from uvicorn.loops.auto import auto_loop_factory

    import inference.chat  # noqa: F401
    import inference.model_runner  # noqa: F401
    import inference.scheduler  # noqa: F401
    import inference.server  # noqa: F401
    import inference.weights  # noqa: F401

    auto_loop_factory()  # imports uvloop where installed; no loop is made
    try:
        import inference.ops.kernels  # noqa: F401
    except ImportError:  # no Triton here: the child's step runs the eager operations
        return
    prepare_triton()  # once here for every model process forked from now on


def fresh_start_problem(model_path: str) -> str:
    """Why a model process started now could not build its model from the checkpoint's config (a
    file cut short, copied over mid-way, naming an unknown model); "" when the config loads."""
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(model_path, local_files_only=True)
    except Exception as exc:  # OSError, ValueError, JSONDecodeError...: all say the same here
        return f"its config.json cannot be loaded: {str(exc)[:300]}"
    return ""


def close_quietly(fds: list[int]) -> None:
    """In a forked child: close the parent's pipes to its other children (one already closed is no
    reason for a child to fail, let alone to go on as a second supervisor)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def exit_code(status: int) -> int:
    """A shell's exit code for a waitpid status: the code, or 128 + the signal that ended it."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def wakeup() -> tuple[int, int]:
    """A pipe Python writes a byte into on every signal the supervisor handles, a child's end
    (SIGCHLD) among them, so that its loop wakes at once for a handover asked, a stop or an end
    rather than at its next poll: (read end, write end)."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGCHLD, lambda sig, frame: None)
    return read_end, write_end


def serve_child(
    listener: socket.socket, handover_fd: int | None, ready_fd: int | None = None, standby_fd: int | None = None
) -> int:
    """In the forked child: run the server on the supervisor's socket; its exit code. It says "ready" on
    `ready_fd` (a start) or `handover_fd` (a handover's new process, which first loads beside the
    serving one; with `standby_fd`, a standby that then waits for its turn there)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own once it runs
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the server takes them once it serves
    os.environ[SUPERVISOR_ENV] = str(os.getppid())
    for name, fd in (
        (handover.HANDOVER_FD_ENV, handover_fd),
        (handover.READY_FD_ENV, ready_fd),
        (handover.STANDBY_FD_ENV, standby_fd),
    ):
        if fd is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(fd)
    from inference import server

    try:
        server.main(listener)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("the model server failed")
        return 1
    return 0


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound once for every model process the supervisor forks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    return sock


class Supervisor:
    def __init__(self, settings: Settings, listener: socket.socket, record: handover.Record, holder_path: str = ""):
        self.settings = settings
        self.holder_path = holder_path  # the first weight holder's socket; "" = no holder
        self.holder: HolderProcess | None = None
        # A handover after the checkpoint changed starts a second holder reading the new files; the
        # new model process maps its weights, and it replaces the first once the old process is gone.
        self.next: HolderProcess | None = None
        self.reloads = 0
        self.listener = listener
        self.record = record
        self.serving = 0  # the model process clients are served by
        self.incoming = 0  # a handover's new process, until it serves
        self.incoming_says: int | None = None  # the read end of its pipe
        # A started process's pipe, until it says "ready" (a handover's new process said it on its own).
        self.serving_says: int | None = None
        self.standby: StandbyProcess | None = None
        self.standby_for = 0  # the serving process a standby was last forked beside: one try each
        # Old processes finishing their requests, with when they must have ended: one that outlives
        # its drain (hung, stopped) is killed, so a handover never waits on it for ever.
        self.retiring: dict[int, float] = {}
        self.stopping = 0  # the signal that asked us to stop
        self.wanted = False  # a handover asked for (SIGUSR1), not yet begun
        self.fallback = False  # the serving process is draining for a restart a handover could not do
        self.reload = False  # and the holder is to read the changed checkpoint once it is gone
        self.starts = 0
        self.imported = False
        self.wake: tuple[int, ...] = ()  # wakeup()'s pipe, once run() begins

    # Signal handlers only set flags or pass the signal on: the loop in run() does the work.
    def forward(self, sig, frame) -> None:
        self.stopping = self.stopping or sig
        for pid in (self.serving, self.incoming, *self.retiring, self.standby.pid if self.standby else 0):
            self._signal(pid, sig)

    def want_handover(self, sig, frame) -> None:
        self.wanted = True

    @staticmethod
    def _said(fd: int) -> list[tuple[str, str]]:
        """A child's words on its pipe since the last read: (first word, rest of the line) per line."""
        try:
            said = os.read(fd, 4096).decode(errors="replace")
        except BlockingIOError:
            return []
        return [(word, rest) for word, _, rest in (line.partition(" ") for line in said.splitlines())]

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _own_fds(self) -> list[int]:
        """The pipes to the other children, which a child forked now must not keep open (a standby
        would never hear the supervisor end while another child held its pipe's write end)."""
        fds = [self.incoming_says, self.serving_says, *(h.says for h in (self.holder, self.next) if h)]
        if self.standby:
            fds += [self.standby.says, self.standby.go]
        return [fd for fd in fds if fd is not None] + list(self.wake)

    def _forked(self, *fds: int) -> None:
        """In a child just forked: the supervisor's signal wakeup and pipes are not its own (a
        signal to the child would write into whatever file took the wakeup pipe's number)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        close_quietly([*fds, *self._own_fds()])

    def fork(self, handover_fd: int | None = None, ready_fd: int | None = None, standby_fd: int | None = None) -> int:
        if self.imported:
            self.refresh_inherited()
        pid = os.fork()
        if pid == 0:
            self._forked()
            code = serve_child(self.listener, handover_fd, ready_fd, standby_fd)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        self.starts += 1
        role = "standby" if standby_fd is not None else "handover" if handover_fd is not None else "start"
        logs.event(log, "model process started", pid=pid, starts=self.starts, role=role)
        return pid

    def start_holder(self, path: str, beside: bool = False) -> HolderProcess:
        """A weight holder on `path`, reading the checkpoint as it is now (`beside` the held weights:
        only where both fit, holder.serve)."""
        stamp = holder.stamp(self.settings.model_path)
        # Bound here, before the fork: a model process forked next connects at once and waits in the
        # backlog. Bound by the holder, a model process that asked before the holder was first
        # scheduled (a busy host) found no socket and read the weights itself.
        try:
            bound = holder.listen(path)
        except OSError:
            bound = None  # the holder tries again and fails saying why, as for weights it cannot read
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._forked(read_end)
                self.listener.close()
                settings = self.settings
                code = holder.serve(
                    settings.model_path,
                    settings.device,
                    settings.hold_weights,
                    bound if bound is not None else path,
                    write_end,
                    beside=settings.handover_max_bytes if beside else None,
                )
            except BaseException:
                log.exception("the weight holder failed")
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        os.close(write_end)
        if bound is not None:
            bound.close()  # the holder's now: model processes forked later must not inherit it
        logs.event(log, "weight holder started", pid=pid, socket=os.path.basename(path))
        return HolderProcess(pid, read_end, path, stamp)

    def read_holder(self) -> None:
        """The holder's word: "holding <bytes> <seconds>", or "none <why>" where it holds nothing."""
        for word, rest in self._said(self.holder.says):
            if word == "holding":
                held, _, seconds = rest.partition(" ")
                self.record.holder(pid=self.holder.pid, state="holding", bytes=int(held), seconds=float(seconds))
            elif word == "none":
                self.record.holder(pid=self.holder.pid, state="not held", why=rest)

    def holder_ended(self, code: int) -> int | None:
        """The holder ended: expected where it holds nothing, else a crash that ends the supervisor."""
        self.read_holder()
        state = (self.record.data.get("holder") or {}).get("state")
        os.close(self.holder.says)
        self.holder = None
        if state == "not held" and code == 0:
            return None
        self.record.holder(pid=0, state="ended", exit_code=code)
        logs.event(log, "the weight holder ended; the supervisor ends with it", logging.ERROR, exit_code=code)
        # Its model processes drain (or are killed once overdue) and the supervisor ends with them.
        deadline = time.monotonic() + self.settings.drain_timeout + RETIRE_GRACE_SECONDS
        for pid in (self.serving, self.incoming):
            if pid:
                self.retiring[pid] = deadline
        self.serving = self.incoming = 0
        for pid in self.retiring:
            self._signal(pid, signal.SIGTERM)
        return code or 1

    def stop_holder(self) -> None:
        """After the last model process: nothing maps the weights any more."""
        self._end(self.holder)
        self.holder = None
        self.stop_next_holder()

    def _end(self, process: HolderProcess | StandbyProcess | None) -> None:
        """Kill a child that serves nobody and reap it (its memory is free once this returns)."""
        if process is not None:
            self._signal(process.pid, signal.SIGKILL)
            try:
                os.waitpid(process.pid, 0)
            except ChildProcessError:
                pass
            os.close(process.says)

    # -- new weights: a second holder while the checkpoint changed
    def start_next_holder(self, current: dict, asked: bool = False) -> None:
        """A second holder reading the checkpoint: it changed, or (`asked`) the weights are to be read
        again although it did not (a holder's copy is suspect, say after the GPU reported memory
        errors)."""
        self.reloads += 1
        path = os.path.join(os.path.dirname(self.holder.path), f"weights-{self.reloads}.sock")
        self.next = self.start_holder(path, beside=True)
        self.record.phase(current, "reloading weights" if asked else "reading new weights", pid=self.next.pid)
        logs.event(log, "a new weight holder reads the checkpoint", pid=self.next.pid, asked=asked)

    def read_next_holder(self) -> None:
        """Once the new holder holds the new weights, the handover's new process maps them."""
        current = self.record.current
        for word, rest in self._said(self.next.says):
            if word == "holding" and current is not None and not self.incoming:
                held, _, seconds = rest.partition(" ")
                self.next.held = {"bytes": int(held), "seconds": float(seconds)}
                self.record.phase(
                    current, "new weights held", pid=self.next.pid, bytes=int(held), load_seconds=float(seconds)
                )
                self.fork_incoming(current, self.next.path)

    def next_holder_ended(self, code: int) -> None:
        """The new holder ended before it replaced the old one. With no room for both copies of the
        weights: the drained way (the old process drains and exits, the old holder ends, a holder
        reads the new weights, a new process maps them). Else the new weights could not be read (or,
        mapped already, are gone): the handover fails and the old process and weights go on."""
        why = next((rest for word, rest in self._said(self.next.says) if word == "no-room"), "")
        os.close(self.next.says)
        self.next = None
        current = self.record.current
        if self.incoming:  # it may map memory that is gone now
            self._signal(self.incoming, signal.SIGKILL)
        if current is not None and code == handover.NO_ROOM_EXIT and not self.stopping:
            why = f"{why or 'no room for the new weights beside the old'}; they are read once the old process is gone"
            self.fall_back(current, why, "no room for the new weights; restarting the drained way", reload=True)
        elif current is not None:
            why = (
                f"the changed checkpoint could not be read (its weight holder exited with code {code});"
                " the old weights still serve"
            )
            self.record.phase(current, "new weights failed", exit_code=code)
            self.record.end(current, "failed", why)
            logs.event(log, "handover failed", logging.ERROR, why=why)

    def fall_back(self, current: dict, why: str, event: str, reload: bool = False) -> None:
        """No room for a handover: the serving process drains and exits for a fresh one (`reload`: the
        holder reads the changed checkpoint first). Unless a fresh process could not start on the
        checkpoint as it is now: then nothing is drained, the handover fails and the old process goes
        on serving, rather than a restart leaving nothing that serves."""
        problem = fresh_start_problem(self.settings.model_path)
        if problem:
            self.stop_next_holder()  # its weights would serve nobody
            failed = f"{why}; but a fresh process could not start ({problem}): the old one still serves"
            self.record.phase(current, "fallback refused", why=problem)
            self.record.end(current, "failed", failed)
            logs.event(log, "handover failed", logging.ERROR, why=failed)
            return
        self.record.phase(current, "fallback: drained restart", why=why)
        self.record.end(current, "fallback", why)
        self.fallback = True
        self.reload = self.reload or reload
        self._signal(self.serving, signal.SIGHUP)  # drain, then exit for a fresh process
        logs.event(log, event, logging.WARNING, why=why)

    def stop_next_holder(self) -> None:
        self._end(self.next)
        self.next = None

    def reload_holder(self) -> None:
        """No model process maps the weights (a drained restart): the holder is replaced by one that
        reads the checkpoint as it is now, at the same socket; the next model process waits for it.
        Files that no longer look whole (changed again since the new holder checked them) keep the
        old holder: the next model process maps the old weights and the handover fails, saying why,
        instead of a holder failing with nothing left to serve."""
        self.reload = False
        try:
            weights.check(self.settings.model_path)
        except Exception as exc:  # Unsupported, OSError, ValueError: why the files cannot be read
            why = f"the changed checkpoint could not be read ({exc}); the old weights still serve"
            handovers = self.record.data["handovers"]
            if handovers and handovers[-1]["state"] == "fallback":
                self.record.phase(handovers[-1], "new weights unreadable", why=str(exc)[:300])
                self.record.end(handovers[-1], "failed", why)
            logs.event(log, "handover failed", logging.ERROR, why=why)
            return
        old, path = self.holder, self.holder.path
        self._end(old)
        self.holder = None  # its pipe is closed: a process forked now must not close it again
        try:
            os.unlink(path)
        except OSError:
            pass
        self.holder = self.start_holder(path)
        self.record.holder(pid=self.holder.pid, state="loading")
        logs.event(log, "the weight holder reads the changed checkpoint", old_pid=old.pid, pid=self.holder.pid)

    def promote_next_holder(self, current: dict | None = None) -> None:
        """The old model process is gone: the new holder's weights are the only ones mapped, the old
        holder ends (a phase of the handover `current`, if one is under way)."""
        if not (self.next and self.next.held):
            return
        old = self.holder
        self._end(old)
        if current is not None:
            self.record.phase(current, "old weights released", pid=old.pid)
        self.holder, self.next = self.next, None
        os.environ[holder.SOCKET_ENV] = self.holder.path  # every later model process maps these
        try:
            os.unlink(old.path)
        except OSError:
            pass
        self.record.holder(pid=self.holder.pid, state="holding", **self.holder.held)
        logs.event(log, "the new weight holder replaces the old one", old_pid=old.pid, pid=self.holder.pid)

    def start(self) -> None:
        began = time.monotonic()
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        self.serving_says = read_end
        try:
            self.serving = self.fork(ready_fd=write_end)
        finally:
            os.close(write_end)
        self.record.serving(self.serving)
        if self.stopping:  # the signal came while forking, before the child was known
            self._signal(self.serving, self.stopping)
        if not self.imported:
            self.imported = True
            try:
                preload()
                logs.event(log, "imports ready", seconds=round(time.monotonic() - began, 2))
            except Exception:  # the child is running: keep it, and let each restart import for itself
                log.exception("the supervisor could not import the server's modules; restarts will")
                return
            self.refresh_inherited()

    def refresh_inherited(self) -> None:
        """What the model processes forked from now on inherit: the checkpoint's tokenizer and image
        processor, and the model's skeleton where they assemble their model (assembly.py); made at the
        first start, again when their files changed (a new checkpoint)."""
        path = self.settings.model_path
        began = time.monotonic()
        try:
            if processors.refresh(path):
                logs.event(log, "tokenizer and image processor loaded", seconds=round(time.monotonic() - began, 2))
        except Exception:
            log.exception("the supervisor could not load the tokenizer; each model process loads its own")
        if self.settings.weight_loader != "prefetch" and not holder.wanted(
            self.settings.hold_weights, self.settings.device
        ):
            return  # from_pretrained builds the model: no skeleton taken
        began = time.monotonic()
        try:
            if assembly.build_ahead(engine.model_class(), path):
                logs.event(log, "model skeleton built", seconds=round(time.monotonic() - began, 2))
        except Exception:
            log.exception("the supervisor could not build the model's skeleton; each model process builds its own")

    def begin_handover(self) -> None:
        self.wanted = False
        reload = self.record.take_reload()
        if self.record.current or self.fallback or not self.serving:
            logs.event(log, "handover not begun: one is already under way", logging.WARNING)
            return
        current = self.record.begin(self.serving)
        standby = self.take_standby(reload)
        if self.holder and (reload or holder.stamp(self.settings.model_path) != self.holder.stamp):
            self.start_next_holder(current, asked=reload)  # the new process is forked once it holds them
            return
        if standby is not None:
            self.hand_to_standby(current, standby)
            return
        self.fork_incoming(current)

    def fork_incoming(self, current: dict, weights_socket: str = "") -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        self.incoming_says = read_end
        if weights_socket:
            os.environ[holder.SOCKET_ENV] = weights_socket
        try:
            self.incoming = self.fork(handover_fd=write_end)
        finally:
            if weights_socket:
                os.environ[holder.SOCKET_ENV] = self.holder.path
        os.close(write_end)
        current["new_pid"] = self.incoming
        self.record.phase(current, "new process started", pid=self.incoming)

    # -- the standby (HANDOVER_STANDBY): a model process loaded ahead for the next handover
    def maybe_standby(self) -> None:
        """Fork a standby once the serving process is ready and nothing else is under way (its room
        check then counts what the serving process really holds), once per serving process."""
        if not (self.settings.handover_standby and self.imported) or self.standby or self.stopping:
            return
        if not self.serving or self.serving_says is not None or self.standby_for == self.serving:
            return
        if self.record.current or self.fallback or self.retiring or self.incoming or self.next:
            return
        if self.holder and (self.record.data.get("holder") or {}).get("state") == "loading":
            return
        says, says_end = os.pipe()
        os.set_blocking(says, False)
        go_end, go = os.pipe()
        self.standby = StandbyProcess(0, says, go, checkpoint_files(self.settings.model_path))
        try:
            self.standby.pid = self.fork(handover_fd=says_end, standby_fd=go_end)
        finally:
            os.close(says_end)
            os.close(go_end)
        self.standby_for = self.serving
        self.record.standby(pid=self.standby.pid, state="loading")

    def read_standby(self) -> None:
        """The standby's word: "standby <load seconds>" once loaded; "no-room <why>" before it exits."""
        for word, rest in self._said(self.standby.says):
            if word == "standby":
                self.standby.ready = True
                self.standby.load_seconds = float(rest or 0)
                self.record.standby(pid=self.standby.pid, state="ready", load_seconds=self.standby.load_seconds)
                logs.event(log, "standby ready", pid=self.standby.pid, load_seconds=self.standby.load_seconds)
            elif word == "no-room":
                self.standby.why = f"no room beside the serving process: {rest}"

    def standby_ended(self, code: int) -> None:
        """The standby exited before any handover took it: recorded, not tried again until the next
        process serves (a standby that cannot load would otherwise be forked again and again)."""
        self.read_standby()
        standby, self.standby = self.standby, None
        os.close(standby.says)
        os.close(standby.go)
        if self.stopping:
            return
        why = standby.why or f"it exited with code {code} before it was needed"
        self.record.standby(pid=standby.pid, state="failed", exit_code=code, why=why)
        logs.event(log, "standby failed", logging.WARNING, pid=standby.pid, why=why)

    def discard_standby(self, why: str) -> None:
        """End the standby now (it serves nobody), waiting for it so its memory is free again."""
        standby, self.standby = self.standby, None
        if standby is None:
            return
        self._end(standby)
        os.close(standby.go)
        if not self.stopping:
            self.record.standby(pid=standby.pid, state="discarded", why=why)
        logs.event(log, "standby discarded", pid=standby.pid, why=why)

    def take_standby(self, reload: bool) -> StandbyProcess | None:
        """The standby for the handover beginning, if it loaded what the checkpoint holds now (a
        stale one is discarded: the handover then forks a new process as without one)."""
        if self.standby is None:
            return None
        if reload:
            self.discard_standby("the weights are read again")
        elif self.standby.stamp != checkpoint_files(self.settings.model_path):
            self.discard_standby("the checkpoint's files changed since it loaded")
        return self.standby

    def hand_to_standby(self, current: dict, standby: StandbyProcess) -> None:
        """The standby becomes the handover's new process: told to serve, it says "ready" as one
        (read_incoming), at once if it is loaded, else once it is."""
        self.standby = None
        self.incoming, self.incoming_says = standby.pid, standby.says
        current["new_pid"] = standby.pid
        try:
            os.write(standby.go, b"go\n")
        except BrokenPipeError:  # it has just ended: reaped as a new process that never served
            pass
        os.close(standby.go)
        self.record.standby()
        if standby.ready:
            self.record.phase(current, "standby taking over", pid=standby.pid, load_seconds=standby.load_seconds)
        else:  # it serves once loaded, as a process forked now would, only sooner
            self.record.phase(current, "standby taking over once loaded", pid=standby.pid)
        logs.event(log, "handover: the standby takes over", pid=standby.pid, ready=standby.ready)

    def read_serving(self) -> None:
        """A started process's word: "ready" once it serves."""
        if any(word == "ready" for word, _ in self._said(self.serving_says)):
            self._close_serving_pipe()

    def _close_serving_pipe(self) -> None:
        if self.serving_says is not None:
            os.close(self.serving_says)
            self.serving_says = None

    def read_incoming(self) -> None:
        """The new process's word: a line "ready <load seconds>" once it accepts connections."""
        said = self._said(self.incoming_says)
        current = self.record.current
        if not said or current is None:
            return
        for word, rest in said:
            if word == "ready":
                self.record.phase(current, "new process serving", pid=self.incoming, load_seconds=float(rest or 0))
                old, self.serving = self.serving, self.incoming
                self.incoming = 0
                self._close_serving_pipe()  # the old process's, if it never said ready
                self.record.serving(self.serving)
                self.retiring[old] = time.monotonic() + self.settings.drain_timeout + RETIRE_GRACE_SECONDS
                self._signal(old, signal.SIGUSR2)
                self.record.phase(current, "old process draining", pid=old)
                logs.event(log, "handover: the new process serves", old_pid=old, new_pid=self.serving)
            elif word == "no-room":
                current["why"] = rest
            elif word == "kv-slots":  # room for a smaller KV cache only: it grows back later
                slots, _, wanted = rest.partition(" ")
                if slots.isdigit() and wanted.isdigit():
                    self.record.phase(
                        current, "smaller kv cache", pid=self.incoming, slots=int(slots), wanted=int(wanted)
                    )
            elif word == "mapped":  # the weights, from the holder
                self.record.phase(current, "weights mapped", pid=self.incoming, load_seconds=float(rest or 0))

    def ended(self, pid: int, code: int) -> int | None:
        """A child ended; the supervisor's exit code when it must end too."""
        if self.holder and pid == self.holder.pid:
            return self.holder_ended(code)
        if self.next and pid == self.next.pid:
            self.next_holder_ended(code)
            return None
        if self.standby and pid == self.standby.pid:
            self.standby_ended(code)
            return None
        current = self.record.current
        if pid == self.incoming:
            self.read_incoming()  # its last word (why it found no room) may come with its end
            self.incoming = 0
            self._close_pipe()
            if current is None:
                return None
            if code != handover.NO_ROOM_EXIT or self.stopping:
                self.stop_next_holder()  # its weights served nobody (after a fallback, the restart maps them)
            if code == handover.NO_ROOM_EXIT and not self.stopping:
                why = current["why"] or "no room for a second model"
                self.fall_back(current, why, "handover not possible; restarting the drained way")
            else:
                why = f"the new process exited with code {code} before it served; the old one still serves"
                self.record.phase(current, "failed", pid=pid, exit_code=code)
                self.record.end(current, "failed", why)
                logs.event(log, "handover failed", logging.ERROR, why=why)
            return None
        if pid in self.retiring:
            del self.retiring[pid]
            self._close_pipe()
            if current is not None:
                self.record.phase(current, "old process gone", pid=pid, exit_code=code)
            if not self.retiring:
                # before the record says done: whoever reads "done" finds the new holder recorded
                # and the old one's memory released
                self.promote_next_holder(current)
            if current is not None:
                self.record.end(current, "done")
                logs.event(log, "handover done", old_pid=pid, new_pid=self.serving)
            return None
        if pid != self.serving:
            return None  # an orphan the container's first process inherited (say, an ended child's compile worker)
        self.serving = 0
        self._close_serving_pipe()
        if self.stopping:
            stopped = code == 0 or code == 128 + self.stopping
            logs.event(log, "stopped", child_exit=code)
            return 0 if stopped else code
        if code != RESTART_EXIT:
            for other in (self.incoming, *self.retiring):
                self._signal(other, signal.SIGTERM)
            logs.event(log, "model process ended; the supervisor ends with it", logging.ERROR, exit_code=code)
            return code
        logs.event(log, "model process restarting", pid=pid)
        self.fallback = False
        if self.reload and self.holder and not self.retiring:
            self.discard_standby("the weight holder reads the changed checkpoint")
            self.reload_holder()  # the new weights did not fit beside the old ones
        elif not self.retiring:
            self.promote_next_holder()  # a fallback's restart maps the new weights
        self.start()
        return None

    def _close_pipe(self) -> None:
        if self.incoming_says is not None and not self.incoming:
            os.close(self.incoming_says)
            self.incoming_says = None

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.forward)
        signal.signal(signal.SIGUSR1, self.want_handover)
        self.wake = wakeup()
        if self.holder_path:
            self.holder = self.start_holder(self.holder_path)
            self.record.holder(pid=self.holder.pid, state="loading")
        self.start()
        code = None
        while True:
            # As the container's first process the supervisor reaps every child that ends, its own
            # and orphans it inherits, rather than leaving zombies.
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                if not pid:
                    break
                ended = self.ended(pid, exit_code(status))
                if ended is not None and code is None:
                    code = ended
            if code is not None and not (self.serving or self.incoming or self.retiring):
                self.discard_standby("the supervisor ends")
                self.stop_holder()
                return code
            if self.wanted and not self.stopping and code is None:
                self.begin_handover()
            if self.incoming_says is not None:
                self.read_incoming()
            if self.serving_says is not None:
                self.read_serving()
            if self.standby:
                self.read_standby()
            if code is None:
                self.maybe_standby()
            if self.holder:
                self.read_holder()
            if self.next:
                self.read_next_holder()
            self.kill_overdue()
            woken = select.select(self._listened(), [], [], POLL_SECONDS)[0]
            if self.wake[0] in woken:
                os.read(self.wake[0], 4096)  # the signals' bytes: their handlers have run
            elif woken:  # a child's word, read next time round; a pipe at its end (the child is
                time.sleep(0.001)  # ending) stays readable, so never spin faster than this

    def _listened(self) -> list[int]:
        """What wakes the loop at once: a signal, or a word from a handover's new process (its
        "ready" is what clients wait for), a started process or the standby."""
        fds = [self.wake[0], self.serving_says, self.standby.says if self.standby else None]
        if self.incoming:
            fds.append(self.incoming_says)
        return [fd for fd in fds if fd is not None]

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for pid, deadline in list(self.retiring.items()):
            if now > deadline:
                self.retiring[pid] = float("inf")  # killed once; its end is reaped as any other
                current = self.record.current
                if current is not None:
                    self.record.phase(current, "old process killed", pid=pid)
                logs.event(log, "the old process outlived its drain; killed", logging.WARNING, pid=pid)
                self._signal(pid, signal.SIGKILL)


def main() -> None:
    settings = Settings()
    # stdout only: LOG_FILE is the child's, and two processes rotating one file would lose lines.
    logs.setup(dataclasses.replace(settings, log_file=""))
    if not settings.model_path:
        raise SystemExit("MODEL_PATH is not set: point it at a GLM-4V checkpoint directory")
    listener = listen(settings.host, settings.port)
    if settings.hold_weights not in holder.HOLD_MODES:
        raise SystemExit(f"HOLD_WEIGHTS must be one of {', '.join(holder.HOLD_MODES)}, not {settings.hold_weights!r}")
    # The record and the holder's socket, in a directory only this user enters.
    private = tempfile.mkdtemp(prefix="inference-supervisor-")
    path = os.path.join(private, "state.json")
    os.environ[handover.STATE_ENV] = path
    holder_path = ""
    record = handover.Record(path)
    why_not = holder.not_here(settings.hold_weights, settings.device)
    if why_not:
        record.data["holder"] = {"pid": 0, "state": "not held", "why": why_not}
    else:
        holder_path = os.environ[holder.SOCKET_ENV] = os.path.join(private, "weights.sock")
    record.save()
    logs.event(log, "supervising", pid=os.getpid(), host=settings.host, port=settings.port)
    try:
        code = Supervisor(settings, listener, record, holder_path).run()
    finally:
        record.remove()
        shutil.rmtree(private, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
