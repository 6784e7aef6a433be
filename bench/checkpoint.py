"""The random-weight checkpoint a bench measures, written where it is missing."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure(model: str, device: str) -> None:
    """Write the checkpoint at `model` unless one is there: the real GLM-4.6V-Flash shape on a GPU,
    the smoke model elsewhere (a bench's trial run)."""
    if not Path(model, "config.json").exists():
        full = ["--full"] if device == "cuda" else []
        subprocess.run([sys.executable, "-m", "inference.smoke_model", model, *full], cwd=ROOT, check=True)
