"""`make test`'s two lanes (scripts/test.sh: pytest -p tests.lanes -n 2): one worker runs everything
that shares this machine's Docker Engine, Redis, PostgreSQL cluster, fixed ports, browser sessions and
Docker images built on first use, one test at a time in its usual order; the other runs, beside it,
the modules that share none of these: the model server's tests (tests/inference: its own processes on
free ports, files in their own temporary directories) and the console's own smoke-model processes
restarted by the pipeline, rollouts and watchdog (free ports, the worker's own var/ directory and test
database, an in-memory broker), then vLLM's (its own processes, a console and a browser of its own).
With vLLM's module alone beside the rest, the rest took 26 minutes on 2 cores and the other worker
idled after 4; with the model server's tests (a quarter of the suite) moved beside it, 20, the rest
still the longer lane by about 5 minutes (1,410 s of tests against 1,093) and, on a fresh machine,
by the Docker images' build too (about 5 minutes, on the shared lane while the other runs on).

A scheduler of pytest-xdist's, not its xdist_group marks: with pytest 9.2 their groups are silently
dropped (pytest-dev/pytest-xdist#1386) and every test spreads over both workers. LoadScopeScheduling
hands out the unit with the most tests first, to each worker one, and the next to the first worker
left with two tests or fewer: the shared unit to one worker, the side unit to the other, and vLLM's,
last, to whichever finishes first (the side one)."""

from xdist.scheduler import LoadScopeScheduling

BESIDE = {
    "tests/inference/": "side",
    "tests/host/test_process_runtime.py": "side",
    "tests/operations/test_rollout.py": "side",
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
