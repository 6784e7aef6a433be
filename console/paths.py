"""Where the console keeps its files, and the one step that creates them (`manage.py` runs it).

Kept apart from settings so that importing the settings never writes to disk.
"""

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    """The database, secret, instance pid files and logs (CONSOLE_VAR_DIR, default ./var)."""
    return Path(os.environ.get("CONSOLE_VAR_DIR") or BASE_DIR / "var")


def secret_path() -> Path:
    return var_dir() / "secret_key"


def prepare() -> None:
    """Create the var directory and, once, a secret key kept in it (when SECRET_KEY is not set)."""
    var_dir().mkdir(parents=True, exist_ok=True)
    path = secret_path()
    if not os.environ.get("SECRET_KEY") and not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(50))
