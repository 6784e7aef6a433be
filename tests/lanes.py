"""`make test`'s two lanes (scripts/test.sh: pytest -p tests.lanes -n 2): vLLM's module, minutes of
its own processes starting with a console and a browser of its own, beside everything else, which
runs in its usual order on the other worker. Nothing else shares a lane: Docker images built on
first use, fixed ports and Redis databases stay with one test at a time.

A scheduler of pytest-xdist's, not its xdist_group marks: with pytest 9.2 their groups are silently
dropped (pytest-dev/pytest-xdist#1386) and every test spreads over both workers."""

from xdist.scheduler import LoadScopeScheduling

BESIDE = "tests/engines/test_vllm.py"


class Lanes(LoadScopeScheduling):
    """Two work units: vLLM's module and the rest; each worker takes one."""

    def _split_scope(self, nodeid: str) -> str:
        return "vllm" if nodeid.startswith(BESIDE) else "main"


def pytest_xdist_make_scheduler(config, log):
    return Lanes(config, log)
