"""The apps import one way (docs/ARCHITECTURE.md): a staircase, checked on every import, at module
level or inside a function, so that no arrow ever points back up."""

import ast
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[2] / "console"

# An app may import the apps on lower steps, never one on its own step or above.
STAIRCASE = {
    "instances": 0,  # the inventory: hosts, instances, roles
    "audit": 0,  # who did what: written by everyone above
    "live": 0,  # the event vocabulary sent to browsers
    "alerts": 1,  # channels and deliveries about instances
    "accounts": 1,  # sign-in throttling, language
    "host": 2,  # what a host's worker touches: runtimes, NVML, sockets, logs, the model-server client
    "telemetry": 3,  # seeing: samples, series, Diagnose, the shared rules
    "operations": 4,  # doing: the one path of every action
    "watchdog": 5,  # policy: when to act, from samples
    "schedules": 5,  # policy: when to act, from the clock
    "api": 6,  # JSON edges
    "embedded": 6,  # the one-process mode
    "web": 7,  # every page: the only app that combines the others
}
# Project modules: the settings, paths and HTTP with deadlines are for everyone; the Celery app
# imports no app.
SHARED = {
    "settings",
    "paths",
    "celery",
    "serializers",
    "sentences",
    "deadlines",
    "untrusted",
    "admin_readonly",
    "__init__",
}
TOP = {"urls", "asgi"}


def imported_apps(path: Path) -> set[tuple[str, int]]:
    """(module's first part under console, line) for every import of console.* in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + (
                [f"{node.module}.{a.name}" for a in node.names] if node.module == "console" else []
            )
        for name in names:
            parts = name.split(".")
            if parts[0] == "console" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def test_every_app_has_a_step():
    apps = {p.name for p in CONSOLE.iterdir() if (p / "__init__.py").exists()}
    assert apps == set(STAIRCASE), f"place these apps on the staircase: {sorted(apps ^ set(STAIRCASE))}"


def test_imports_run_down_the_staircase():
    wrong = []
    for path in sorted(CONSOLE.rglob("*.py")):
        relative = path.relative_to(CONSOLE)
        owner = relative.parts[0].removesuffix(".py")
        for target, line in imported_apps(path):
            if target == owner or target in SHARED:
                continue
            if owner in TOP:
                continue
            if owner in SHARED:
                wrong.append(f"console/{relative}:{line} imports console.{target}: project modules import no app")
            elif target not in STAIRCASE or STAIRCASE[target] >= STAIRCASE[owner]:
                wrong.append(f"console/{relative}:{line} ({owner}) imports console.{target}")
    assert not wrong, "imports against the staircase:\n" + "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from console.web.views import x\n    import console.operations.tasks\n")
    assert {target for target, _ in imported_apps(module)} == {"web", "operations"}
