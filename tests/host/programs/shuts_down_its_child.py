"""A server whose worker must hear the stop from the server itself, as vLLM's engine core finishes
its requests only then: on SIGTERM the main process tells its child to finish (SIGUSR1); a SIGTERM
that reaches the child directly is an abort."""

import signal
import subprocess
import sys
import time

CHILD = """
import signal, sys, time
def abort(*_):
    print("child: aborted by SIGTERM", flush=True)
    sys.exit(1)
def finish(*_):
    print("child: finished its work", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, abort)
signal.signal(signal.SIGUSR1, finish)
print("child up", flush=True)
time.sleep(600)
"""

child = subprocess.Popen([sys.executable, "-c", CHILD])


def shutdown(*_):
    time.sleep(0.3)  # a moment in which a signal to the whole group would already have hit the child
    child.send_signal(signal.SIGUSR1)
    child.wait()
    sys.exit(0)


signal.signal(signal.SIGTERM, shutdown)
print("main up", flush=True)
time.sleep(600)
