"""The server's own log file: rotated by size, its older files gzipped (the runbook's logrotate with
compress), JSON lines in them as in the current one."""

import gzip
import json
import logging

import pytest

from inference import logs
from inference.settings import Settings


@pytest.fixture
def root_logger():
    """logs.setup replaces the root logger's handlers: the test's own are put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("compress", [True, False])
def test_the_log_file_rotates_and_its_older_files_are_gzipped(tmp_path, root_logger, compress):
    path = tmp_path / "server.log"
    logs.setup(Settings(log_file=str(path), log_max_bytes=2000, log_backups=2, log_compress=compress))
    logger = logging.getLogger("inference.test")
    for n in range(60):
        logs.event(logger, "request done", n=n, text="x" * 40)
    older = [path.with_name(f"server.log.{n}{'.gz' if compress else ''}") for n in (1, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["server.log", *(p.name for p in older)])
    texts = [gzip.decompress(p.read_bytes()) if compress else p.read_bytes() for p in reversed(older)]
    lines = [json.loads(line) for text in (*texts, path.read_bytes()) for line in text.splitlines()]
    numbers = [line["n"] for line in lines]
    assert numbers == list(range(numbers[0], 60)) and numbers[0] > 0  # in order, none lost but the oldest dropped
    assert all(p.stat().st_size < 2000 for p in (path, *older))
    if compress:
        assert older[0].stat().st_size < 1000  # its lines much alike: gzipped to far less
