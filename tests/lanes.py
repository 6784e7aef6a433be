"""`make test`'s two lanes (scripts/test.sh: pytest -p tests.lanes -n 2): one worker runs everything
that shares this machine's Docker Engine, Redis, PostgreSQL cluster, fixed ports, browser sessions and
Docker images built on first use, one test at a time in its usual order; the other runs, beside it,
the modules that share none of these: the model server's tests (tests/inference: its own processes on
free ports, files in their own temporary directories) and the console's own smoke-model processes
restarted by the pipeline and the watchdog (free ports, the worker's own var/ directory and test
database, an in-memory broker), then vLLM's (its own processes, a console and a browser of its own).
On a fresh machine the shared lane also builds the Docker images (about 3 minutes on 2 cores beside
the other lane): measured from a fresh machine, the shared lane took 1,012 s of tests and the other
1,109 (of which vLLM 224), before a model process's CPU threads were halved; with the images cached,
728 and 964 after it. Both lanes keep both cores busy (about 80 %): moving a module between them
moves its time, it does not hide it.

A scheduler of pytest-xdist's, not its xdist_group marks: with pytest 9.2 their groups are silently
dropped (pytest-dev/pytest-xdist#1386) and every test spreads over both workers. LoadScopeScheduling
hands out the unit with the most tests first, to each worker one, and the next to the first worker
left with two tests or fewer: the shared unit to one worker, the side unit to the other, and vLLM's,
last, to whichever finishes first (the side one)."""

from xdist.scheduler import LoadScopeScheduling

BESIDE = {
    "tests/inference/": "side",
    "tests/host/test_process_runtime.py": "side",
    "tests/operations/test_pipeline_process.py": "side",
    "tests/schedules/test_healing.py": "side",
    "tests/watchdog/test_liveness.py": "side",
    "tests/engines/test_vllm.py": "vllm",
}


class Lanes(LoadScopeScheduling):
    """Three work units: the side lane's modules, vLLM's module, and the rest."""

    def _split_scope(self, nodeid: str) -> str:
        return next((unit for prefix, unit in BESIDE.items() if nodeid.startswith(prefix)), "main")


def pytest_xdist_make_scheduler(config, log):
    return Lanes(config, log)
