"""`make test`'s two lanes (scripts/test.sh: pytest -p tests.lanes -n 2): one worker runs everything
that shares this machine's Docker Engine, Redis, PostgreSQL, fixed ports and Docker images built on
first use, one test at a time in its usual order; the other runs, beside it, the modules that share
none of these: the model server's tests (tests/inference: its own processes on free ports, files in
their own temporary directories), then vLLM's (its own processes, a console and a browser of its own).
With vLLM's module alone beside the rest, the rest took 26 minutes on 2 cores and the other worker
idled after 4; with the model server's tests (a quarter of the suite) moved beside it, 20.

A scheduler of pytest-xdist's, not its xdist_group marks: with pytest 9.2 their groups are silently
dropped (pytest-dev/pytest-xdist#1386) and every test spreads over both workers. LoadScopeScheduling
hands out the unit with the most tests first, to each worker one, and the next to the first worker
left with two tests or fewer: the shared unit to one worker, the model server's to the other, and
vLLM's, last, to whichever finishes first (the model server's)."""

from xdist.scheduler import LoadScopeScheduling

BESIDE = {"tests/inference/": "inference", "tests/engines/test_vllm.py": "vllm"}


class Lanes(LoadScopeScheduling):
    """Three work units: the model server's tests, vLLM's module, and the rest."""

    def _split_scope(self, nodeid: str) -> str:
        return next((unit for prefix, unit in BESIDE.items() if nodeid.startswith(prefix)), "main")


def pytest_xdist_make_scheduler(config, log):
    return Lanes(config, log)
