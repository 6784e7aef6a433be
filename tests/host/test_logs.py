"""Following logs: a file cursor through rotation and huge lines; the follower on a real process."""

import gzip
import sys
import time
from contextlib import contextmanager

import pytest

from console.host import process
from console.host.logs import LogFollower, recent_lines
from console.host.logscan import MAX_LINE_CHARS, clean
from console.host.process import FileCursor, ProcessRuntime, rotate_log
from console.instances.models import Instance
from tests.factories import process_instance


def test_cursor_starts_with_the_recent_past_then_only_new_lines(tmp_path):
    path = tmp_path / "server.log"
    path.write_bytes(b"".join(b"old line %d\n" % i for i in range(10_000)))
    cursor = FileCursor(path, backlog_bytes=1000)
    first = cursor.read()
    assert 0 < len(first) < 100 and first[-1] == b"old line 9999"
    assert all(line.startswith(b"old line ") for line in first)  # the cut first line is skipped
    assert cursor.read() == []
    with open(path, "ab") as log:
        log.write(b"new 1\nnew 2\npartial")
    assert cursor.read() == [b"new 1", b"new 2"]
    with open(path, "ab") as log:
        log.write(b" end\n")
    assert cursor.read() == [b"partial end"]


def test_cursor_follows_copy_truncate_rotation(tmp_path):
    path = tmp_path / "server.log"
    path.write_bytes(b"a\n" * 100)
    cursor = FileCursor(path)
    assert len(cursor.read()) == 100
    assert rotate_log(path, max_bytes=10)
    with open(path, "ab") as log:
        log.write(b"after rotation\n")
    assert cursor.read() == [b"after rotation"]


def test_older_log_files_are_gzipped_all_but_the_newest(tmp_path):
    """As logrotate's compress with delaycompress: the newest older file stays plain (the follower reads
    its end right after a rotation), those before it are gzipped, `backups` of them in all. Plain ones
    an older console left are gzipped in their turn, never kept beside their gzipped names."""
    path = tmp_path / "server.log"
    (tmp_path / "server.log.2").write_bytes(b"left plain 2\n")
    (tmp_path / "server.log.3").write_bytes(b"left plain 3\n")
    for n in range(1, 5):
        path.write_bytes(b"generation %d\n" % n * 100)
        assert rotate_log(path, max_bytes=10, backups=3) and path.stat().st_size == 0
        if n == 1:
            assert gzip.decompress((tmp_path / "server.log.3.gz").read_bytes()) == b"left plain 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "server.log",
        "server.log.1",
        "server.log.2.gz",
        "server.log.3.gz",
    ]
    assert (tmp_path / "server.log.1").read_bytes() == b"generation 4\n" * 100
    assert gzip.decompress((tmp_path / "server.log.2.gz").read_bytes()) == b"generation 3\n" * 100
    assert gzip.decompress((tmp_path / "server.log.3.gz").read_bytes()) == b"generation 2\n" * 100
    assert (tmp_path / "server.log.3.gz").stat().st_size < 200  # compressed: 1,300 bytes of text


def test_the_follower_rotates_a_running_servers_log_and_loses_no_line_it_could_read(tmp_path, settings, monkeypatch):
    """A server that runs for weeks is never restarted to rotate its log: the follower's cursor rotates
    it once read past INSTANCE_LOG_MAX_BYTES, the server appending on through its O_APPEND handle."""
    settings.INSTANCE_LOG_MAX_BYTES, settings.INSTANCE_LOG_BACKUPS = 1000, 2
    path = tmp_path / "server.log"
    writer = open(path, "ab", buffering=0)
    cursor = FileCursor(path, rotate=True)
    assert cursor.read() == []
    real, rotations = process.rotate_log, []

    def late_line_then_rotate(log_path, *args):  # a line reaches the file between the read and the rotation
        writer.write(b"late line %d\n" % len(rotations))
        rotations.append(real(log_path, *args))
        return rotations[-1]

    monkeypatch.setattr(process, "rotate_log", late_line_then_rotate)
    seen = []
    for n in range(60):
        writer.write(b"line %03d " % n + b"x" * 40 + b"\n")
        if n % 7 == 6:
            seen += cursor.read()
    seen += cursor.read()
    numbered = [line for line in seen if line.startswith(b"line ")]
    assert [int(line[5:8]) for line in numbered] == list(range(60))
    assert len(rotations) == 2 and all(rotations)
    assert [line for line in seen if line.startswith(b"late")] == [b"late line 0", b"late line 1"]  # from the copy
    assert path.stat().st_size < 1000 and (tmp_path / "server.log.1").exists()
    assert (tmp_path / "server.log.2.gz").exists() and not (tmp_path / "server.log.3.gz").exists()

    # A line the rotation cuts goes on in the emptied file.
    monkeypatch.setattr(process, "rotate_log", real)
    writer.write(b"y" * 1000 + b"\ncut by the rot")
    assert cursor.read() == [b"y" * 1000] and path.stat().st_size == 0
    writer.write(b"ation\n")
    assert cursor.read() == [b"cut by the rotation"]
    writer.close()

    never = tmp_path / "other.log"
    never.write_bytes(b"y\n" * 1000)
    settings.INSTANCE_LOG_MAX_BYTES = 0  # rotation off
    unrotated = FileCursor(never, backlog_bytes=10_000, rotate=True)
    assert len(unrotated.read()) == 1000 and never.stat().st_size == 2000


def test_a_10_mb_line_is_cut_and_the_next_line_still_arrives(tmp_path):
    path = tmp_path / "server.log"
    path.write_bytes(b"")
    cursor = FileCursor(path)
    cursor.read()
    with open(path, "ab") as log:
        log.write(b"y" * 10_000_000 + b"\nnext\n")
    lines = []
    for _ in range(5):
        lines += cursor.read()
    assert len(lines) == 2
    assert len(lines[0]) == FileCursor.MAX_LINE_BYTES and lines[1] == b"next"
    # The page is told how much was cut in truth, not what the reader happened to keep.
    assert clean(lines[0]).endswith(f"… [{10_000_000 - MAX_LINE_CHARS:,} more bytes]")


def test_a_long_line_the_file_loses_to_rotation_says_how_long_it_got_at_least(tmp_path):
    path = tmp_path / "server.log"
    path.write_bytes(b"")
    cursor = FileCursor(path)
    cursor.read()
    with open(path, "ab") as log:
        log.write("é".encode() * 100_000)  # 200,000 bytes, no newline yet
    assert cursor.read() == []  # its head is kept until the line ends
    path.write_bytes(b"fresh\n")  # copy-truncate rotation
    lost, fresh = cursor.read()
    assert fresh == b"fresh"
    assert clean(lost).endswith(f"… [more than {200_000 - 2 * MAX_LINE_CHARS:,} more bytes]")


@contextmanager
def followed(name: str, script: str, tmp_path, lines: int):
    """A process running `script` and a follower of its log; yields the follower and the first
    `lines` lines it stored for a page (or those it had after 15 s)."""
    instance = process_instance(name, command=[sys.executable, "-c", script], working_dir=str(tmp_path))
    runtime = ProcessRuntime()
    runtime.start(instance)
    follower = LogFollower(["local"])
    try:
        seen = []
        deadline = time.monotonic() + 15
        while len(seen) < lines and time.monotonic() < deadline:
            follower.poll()
            seen = recent_lines(name)
            time.sleep(0.3)
            follower._flushed.clear()  # flush the tail every round in the test
        yield follower, seen
    finally:
        runtime.stop(instance, timeout=5)


@pytest.mark.django_db(transaction=True)
def test_follower_ships_lines_of_a_real_process_and_counts_errors(tmp_path):
    script = (
        "import sys, time\n"
        "print('\\x1b[32mINFO\\x1b[0m starting', flush=True)\n"
        "sys.stdout.buffer.write(b'bad bytes \\xff\\n'); sys.stdout.flush()\n"
        "print('torch.OutOfMemoryError: CUDA out of memory.', flush=True)\n"
        "print('ERROR request timed out', flush=True)\n"
        "time.sleep(30)\n"
    )
    with followed("follow-a", script, tmp_path, lines=4) as (follower, seen):
        texts = [entry["text"] for entry in seen]
        assert texts == [
            "INFO starting",
            "bad bytes \ufffd",
            "torch.OutOfMemoryError: CUDA out of memory.",
            "ERROR request timed out",
        ]
        assert [entry["level"] for entry in seen] == ["info", "info", "info", "error"]
        assert follower.take_counts("follow-a") == {"cuda_oom": 1, "timeout": 1}
        assert follower.take_counts("follow-a") == {}  # taken once


@pytest.mark.django_db(transaction=True)
def test_a_running_process_log_is_rotated_by_its_follower(tmp_path, settings):
    """The log of a local process that keeps running stays under INSTANCE_LOG_MAX_BYTES: rotated while
    it runs, not only at its next start, with its older files kept and its lines all shipped."""
    settings.INSTANCE_LOG_MAX_BYTES, settings.INSTANCE_LOG_BACKUPS = 4000, 2
    script = (
        "import time\n"
        "for burst in range(8):\n"
        "    for n in range(40):\n"
        "        print(f'line {burst * 40 + n:03d} ' + 'x' * 90, flush=True)\n"
        "    time.sleep(0.4)\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n"
    )
    with followed("follow-rot", script, tmp_path, lines=321) as (follower, seen):
        texts = [entry["text"] for entry in seen]
        assert texts[-1] == "done" and [int(t[5:8]) for t in texts[:-1]] == list(range(320))
        log = process.log_path(Instance.objects.get(name="follow-rot"))
        assert log.stat().st_size < 4000 and log.with_name("server.log.1").stat().st_size >= 4000
        assert log.with_name("server.log.2.gz").exists() and not log.with_name("server.log.3.gz").exists()


@pytest.mark.django_db(transaction=True)
def test_a_line_nested_too_deeply_for_json_is_shipped_and_the_errors_beside_it_still_count(tmp_path):
    """A line that opens like JSON and nests past Python's recursion limit made the round raise
    RecursionError: the lines read with it were lost, the CUDA error among them never counted."""
    script = (
        "import time\n"
        "print('{\"level\": ' + '[' * 5000, flush=True)\n"
        "print('torch.OutOfMemoryError: CUDA out of memory.', flush=True)\n"
        "time.sleep(30)\n"
    )
    with followed("follow-deep", script, tmp_path, lines=2) as (follower, seen):
        assert [entry["level"] for entry in seen] == ["info", "info"]
        assert seen[0]["text"].startswith('{"level": [[[') and seen[1]["text"].endswith("CUDA out of memory.")
        assert follower.take_counts("follow-deep") == {"cuda_oom": 1}
