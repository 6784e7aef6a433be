"""Loaded as a pytest plugin (-p tests.env) before Django reads its settings.

Tests get their own var/ directory and, where make test provides one, the
real PostgreSQL server rather than the embedded SQLite default.
"""

import os
import shutil
import tempfile

VAR_DIR = os.environ["CONSOLE_VAR_DIR"] = tempfile.mkdtemp(prefix="console-test-var-")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.pop("REDIS_URL", None)
# Test containers use the host's network (bound to 127.0.0.1) and bind models made under /tmp.
os.environ.setdefault("CONSOLE_NETWORK_MODES", "host")
os.environ.setdefault(
    "CONSOLE_BIND_SOURCES", f"/tmp,{os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}"
)  # tests that need Redis start their own workers with it
# Without a GPU, the Triton kernels (inference/ops/kernels.py) run in Triton's interpreter, which must
# be chosen before triton is first imported.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]


def pytest_unconfigure(config):
    """The var/ directory goes with the test run (every process that wrote to it has ended)."""
    shutil.rmtree(VAR_DIR, ignore_errors=True)
