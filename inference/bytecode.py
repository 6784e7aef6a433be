"""Whether the packages a model process imports came from cached bytecode.

Most of a server's start is importing torch and transformers (docs/BENCHMARKS.md). Python reads
each module's cached bytecode, or compiles the module from its source and writes the bytecode for
the next process. Where none is cached and none may be written (PYTHONDONTWRITEBYTECODE set, an
install that was not compiled and is read-only to the server's user), every start compiles thousands
of modules again: on an H200 host the import took 9.4-10.2 s against 5.4-5.8 s with the bytecode,
and the whole start 12.1 against 8.2 s. Nothing in the server's own figures says why; this does.
"""

import logging
import os
import sys

PACKAGES = ("torch", "transformers", "sympy")  # sympy: torch's, thousands of modules of its own


def uncached(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The imported `packages` that still have no cached bytecode after their import (judged by each
    package's own `__init__`): every process compiles them again."""
    missing = []
    for name in packages:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        cached = getattr(spec, "cached", None)
        if cached and str(spec.origin).endswith(".py") and not os.path.exists(cached):
            missing.append(name)
    return missing


def why_uncached() -> str:
    if sys.dont_write_bytecode:
        return "PYTHONDONTWRITEBYTECODE is set, so Python writes no bytecode"
    return "Python could not write their bytecode (their directories are read-only to this user)"


def warn_if_uncached(log: logging.Logger, import_seconds: float, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Log a warning naming the packages this process compiled from source, with the remedy."""
    missing = uncached(packages)
    if missing:
        log.warning(
            "imported without cached bytecode: every start compiles these packages again",
            extra={
                "fields": {
                    "packages": missing,
                    "import_seconds": round(import_seconds, 2),
                    "why": why_uncached(),
                    "remedy": "python -m compileall on their install once (as its owner), or a writable "
                    "PYTHONPYCACHEPREFIX without PYTHONDONTWRITEBYTECODE",
                }
            },
        )
    return missing
