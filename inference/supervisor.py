"""The model server under a parent that keeps its imports, so a restart skips them.

    MODEL_PATH=/models/glm-4.6v-flash python -m inference.supervisor

Most of a server's start is importing torch and transformers (docs/BENCHMARKS.md). The supervisor
forks the server (inference.server) as its child at once, then imports them itself, never touching
the GPU. `POST /admin/restart` drains the child and ends it; the supervisor forks a fresh one,
which starts with everything imported: a new CUDA context, allocator, KV cache and set of
connections, as after a restart of the container, in the time of the load alone. (The first child
imports for itself, in parallel with the supervisor, and reads the weights meanwhile, as a server
without a supervisor does: a child forked after the import would read them only then.)

SIGTERM and SIGINT go to the child (which drains, as without a supervisor); the supervisor then
exits with the child's code. A child that ends any other way (a crash, an exit of its own) ends the
supervisor with its code too, so the container's restart policy and the console see it, rather
than a supervisor quietly restarting a broken server.
"""

import dataclasses
import logging
import os
import signal
import sys
import time

from inference import logs
from inference.settings import Settings

log = logging.getLogger("inference.supervisor")

RESTART_EXIT = 75  # the child's exit code that asks for a fresh child (EX_TEMPFAIL)
SUPERVISOR_ENV = "INFERENCE_SUPERVISOR_PID"  # set in the child: /admin/restart is offered


def preload() -> None:
    """Import what a server spends most of its start on. Nothing here may start CUDA: a child
    forked from a process that did cannot use the GPU. (PyTorch's DataLoader forks its workers
    from processes that imported torch in the same way.)"""
    import torch  # noqa: F401
    from transformers import (  # noqa: F401
        AutoConfig,
        AutoImageProcessor,
        AutoTokenizer,
        GenerationConfig,
        Glm4vForConditionalGeneration,
    )

    import inference.model_runner  # noqa: F401
    import inference.scheduler  # noqa: F401
    import inference.server  # noqa: F401
    import inference.weights  # noqa: F401

    try:
        import inference.ops.kernels  # noqa: F401
    except ImportError:  # no Triton here: the child's step runs the eager operations
        pass


def exit_code(status: int) -> int:
    """A shell's exit code for a waitpid status: the code, or 128 + the signal that ended it."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def serve_child() -> int:
    """In the forked child: run the server; its exit code."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own once it runs
    os.environ[SUPERVISOR_ENV] = str(os.getppid())
    from inference import server

    try:
        server.main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("the model server failed")
        return 1
    return 0


class Supervisor:
    def __init__(self):
        self.child = 0
        self.stopping = 0  # the signal that asked us to stop

    def forward(self, sig, frame) -> None:
        self.stopping = self.stopping or sig
        if self.child:
            try:
                os.kill(self.child, sig)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.forward)
        starts = 0
        imported = False
        while not self.stopping:
            began = time.monotonic()
            pid = os.fork()
            if pid == 0:
                code = serve_child()
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            self.child = pid
            if self.stopping:  # the signal came while forking, before the child was known
                os.kill(pid, self.stopping)
            starts += 1
            logs.event(log, "model process started", pid=pid, starts=starts)
            if not imported:
                imported = True
                try:
                    preload()
                    logs.event(log, "imports ready", seconds=round(time.monotonic() - began, 2))
                except Exception:  # the child is running: keep it, and let each restart import for itself
                    log.exception("the supervisor could not import the server's modules; restarts will")
            while True:
                # As the container's first process the supervisor also inherits orphans (say, the
                # compile workers of an ended child): reaped here rather than left as zombies.
                reaped, status = os.waitpid(-1, 0)
                if reaped == pid:
                    break
            self.child = 0
            code = exit_code(status)
            if self.stopping:
                stopped = code == 0 or code == 128 + self.stopping
                logs.event(log, "stopped", child_exit=code)
                return 0 if stopped else code
            if code != RESTART_EXIT:
                logs.event(log, "model process ended; the supervisor ends with it", logging.ERROR, exit_code=code)
                return code
            logs.event(log, "model process restarting", pid=pid, ran_s=round(time.monotonic() - began, 1))
        return 0


def main() -> None:
    settings = Settings()
    # stdout only: LOG_FILE is the child's, and two processes rotating one file would lose lines.
    logs.setup(dataclasses.replace(settings, log_file=""))
    if not settings.model_path:
        raise SystemExit("MODEL_PATH is not set: point it at a GLM-4V checkpoint directory")
    logs.event(log, "supervising", pid=os.getpid())
    sys.exit(Supervisor().run())


if __name__ == "__main__":
    main()
