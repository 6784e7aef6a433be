"""Run one benchmark script against each of several checkouts (a tree before a change, and this one),
each in a process of its own with the tree's console on its path: the figures side by side, from one
run on one machine."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run_script(tree: Path, script: str, args: list, database_url: str | None) -> dict:
    """`script` (which sets Django up itself) run with `tree`'s console, against `database_url` or a
    fresh SQLite file; the JSON of its last line of output."""
    with tempfile.TemporaryDirectory() as var:
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "DJANGO_SETTINGS_MODULE": "console.settings",
            "CONSOLE_VAR_DIR": var,
            "DATABASE_URL": database_url or f"sqlite:///{var}/bench.sqlite3",
        }
        done = subprocess.run(
            [sys.executable, "-c", script, *map(str, args)], cwd=tree, env=env, capture_output=True, text=True
        )
    if done.returncode:
        raise SystemExit(f"{tree}: the benchmark failed\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parser(doc: str) -> argparse.ArgumentParser:
    """--tree (repeated; default this checkout), --database-url and --out, and whatever the caller adds."""
    parsed = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parsed.add_argument("--tree", action="append", default=[], help="a checkout (default: this one)")
    parsed.add_argument("--database-url", default=None)
    parsed.add_argument("--out", default="")
    return parsed


def compare(args, script: str, script_args: list) -> dict:
    """Each of `args.tree` in turn; printed, and written to `args.out` as JSON."""
    results = {
        tree: run_script(Path(tree).resolve(), script, script_args, args.database_url) for tree in args.tree or ["."]
    }
    for tree, result in results.items():
        print(f"{tree}: {result}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results
