"""The process runtime: a local supervisor for bare-metal instances.

Each instance runs in its own process group with a pid file and a log file
under CONSOLE_INSTANCE_DIR/<name>/. The pid file records when the process
started, in clock ticks since boot, so a recycled pid is never mistaken for the
instance, and a console that restarts re-adopts instances that are still
running. Processes are only ever signalled by their recorded process group,
never by name.
"""

import gzip
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
from django.conf import settings

from console.host.runtime import RuntimeFailure, RuntimeStatus, StopResult
from console.instances.engines import launch_command
from console.sentences import Sentence, gettext_noop

# Seconds the rest of a process group has to end by itself once its main process has ended.
LEFT_BEHIND_GRACE = 2.0
# Variables passed through from the console's own environment; everything
# else an instance needs is set on the instance, so console secrets never leak.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES")

# Children this console spawned, kept so their exit is reaped (no zombies)
# and their exit code can be reported.
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()


def instance_dir(instance) -> Path:
    path = settings.CONSOLE_INSTANCE_DIR / instance.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(instance) -> Path:
    return instance_dir(instance) / "server.log"


def _pid_path(instance) -> Path:
    return instance_dir(instance) / "pid.json"


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command's name (which may hold spaces and
    parentheses): [0] the state, [2] the process group, [19] the start in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot. Never an epoch time: psutil's
    create_time() adds the boot time the kernel reports (/proc/stat btime), and that moves by a
    second or more whenever the clock is stepped (NTP, a virtual machine resumed), after which a
    running instance compared equal to nothing: it looked stopped, and a stop never signalled it."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _running(pid: int, ticks: int | None) -> bool:
    """Whether `pid` is the process that started at `ticks` and has not ended (a zombie has): one
    read of its stat."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != b"Z" and int(fields[19]) == ticks


def _legacy_ticks(pid: int, start_time: float) -> int | None:
    """The start ticks of `pid` if it is the process a record of an older console names by its epoch
    start time (within a second: the boot time may have moved since)."""
    try:
        if abs(psutil.Process(pid).create_time() - start_time) >= 1:
            return None
    except psutil.Error:
        return None
    return _start_ticks(pid)


def _reap(pid: int) -> int | None:
    """Exit code of a child of ours that has ended, reaping it; None if alive or not ours."""
    with _children_lock:
        child = _children.get(pid)
    if child is None:
        return None
    return child.poll()


class ProcessGroups:
    """Every process's group and start, read once: a sampling round asks for the groups of all its
    instances, and walking /proc again for each made a round grow with the square of the instances
    (docs/BENCHMARKS.md, scale). Operations read the system afresh instead."""

    def __init__(self):
        self._lock = threading.Lock()
        self._members: dict[int, list[tuple[int, int]]] | None = None  # read at the first question

    @staticmethod
    def _read() -> dict[int, list[tuple[int, int]]]:
        members: dict[int, list[tuple[int, int]]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            fields = _stat(name)
            if not fields or fields[0] == b"Z":  # gone meanwhile, or a zombie
                continue
            members.setdefault(int(fields[2]), []).append((int(name), int(fields[19])))
        return members

    def of(self, pgid: int) -> list[tuple[int, int]]:
        with self._lock:  # a round's threads ask at once: one walk
            if self._members is None:
                self._members = self._read()
            return self._members.get(pgid, [])


def _group_pids(pgid: int, leader_start: int | None, groups: ProcessGroups | None = None) -> list[int]:
    """The live processes of the instance's process group.

    Linux keeps a pid allocated while any process still has it as its group id, so members of our
    group can outlive the leader without the group id passing to a stranger. Once the whole group
    is gone the pid may be reused: a process with that pid and another start is a stranger, and so
    is its group. Members never started before our leader did.
    """
    leader = _start_ticks(pgid)
    if leader is not None and leader_start is not None and leader != leader_start:
        return []  # the pid went to another process: our group is gone
    members = (groups or ProcessGroups()).of(pgid)
    return sorted(pid for pid, started in members if leader_start is None or started >= leader_start)


def log_rotation() -> dict:
    """How rotate_log keeps a local process's log (INSTANCE_LOG_MAX_BYTES 0: it grows without limit)."""
    max_bytes = settings.INSTANCE_LOG_MAX_BYTES
    return {
        "driver": "file",
        "max_bytes": max_bytes if max_bytes > 0 else None,
        "files": max(1, settings.INSTANCE_LOG_BACKUPS) + 1,
    }


def rotate_log(path: Path, max_bytes: int | None = None, backups: int | None = None) -> bool:
    """Copy-and-truncate rotation once the file has reached `max_bytes` (INSTANCE_LOG_MAX_BYTES; 0:
    never), `backups` older files kept (INSTANCE_LOG_BACKUPS): the instance keeps its O_APPEND handle
    and writes on. As with logrotate's copytruncate, what is written during the copy itself is lost.
    As with its compress and delaycompress, the newest older file stays plain (the log follower reads
    its end) and those before it are gzipped (`.2.gz`...)."""
    max_bytes = settings.INSTANCE_LOG_MAX_BYTES if max_bytes is None else max_bytes
    backups = max(1, settings.INSTANCE_LOG_BACKUPS if backups is None else backups)
    try:
        if max_bytes <= 0 or path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(backups - 1, 0, -1):
        older, packed = path.with_name(f"{path.name}.{n}"), path.with_name(f"{path.name}.{n}.gz")
        target = path.with_name(f"{path.name}.{n + 1}.gz")
        if packed.exists():
            packed.replace(target)
        elif older.exists():  # the newest older file, or one a console before compression left plain
            _gzip(older, target)
            older.unlink()
        path.with_name(f"{path.name}.{n + 1}").unlink(missing_ok=True)  # left plain by an older console
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as handle:
        handle.truncate(0)
    return True


def _gzip(source: Path, target: Path) -> None:
    """`source` gzipped into `target`, whole or not at all. Level 1, the fastest: a rotation at a start
    is on the restart's path, and log text gains little from more."""
    partial = target.with_name(f".{target.name}.partial")
    with open(source, "rb") as plain, open(partial, "wb") as raw:
        with gzip.GzipFile(target.name.removesuffix(".gz"), "wb", compresslevel=1, fileobj=raw) as packed:
            shutil.copyfileobj(plain, packed, 1 << 20)
    partial.replace(target)


class ProcessRuntime:
    def _record(self, instance) -> dict | None:
        path = _pid_path(instance)
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        if "start_ticks" not in record and "start_time" in record:  # written by an older console
            ticks = _legacy_ticks(record["pid"], record["start_time"])
            record["start_ticks"] = -1 if ticks is None else ticks  # -1: no process of ours started then
            path.write_text(json.dumps(record))
        return record

    def status(self, instance, groups: ProcessGroups | None = None) -> RuntimeStatus:
        """How the instance's process is; `groups`: a sampling round's process table, else read now. Its
        log is the console's to rotate (rotate_log), whatever the process's state."""
        return replace(self._state(instance, groups), log_rotation=log_rotation())

    def _state(self, instance, groups: ProcessGroups | None) -> RuntimeStatus:
        record = self._record(instance)
        if record is None:
            return RuntimeStatus(running=False, detail=Sentence(gettext_noop("not started")))
        pid, pgid = record["pid"], record["pgid"]
        exit_code = _reap(pid)
        leader_alive = exit_code is None and _running(pid, record.get("start_ticks"))
        pids = _group_pids(pgid, record.get("start_ticks"), groups)
        if leader_alive:
            return RuntimeStatus(
                running=True, pids=pids, detail=Sentence(gettext_noop("running as pid %(pid)s"), pid=pid)
            )
        if pids:
            return RuntimeStatus(
                running=True,
                pids=pids,
                detail=Sentence(
                    gettext_noop("pid %(pid)s ended but its group has %(count)d left"), pid=pid, count=len(pids)
                ),
            )
        detail = (
            Sentence(gettext_noop("exited with code %(code)s"), code=exit_code)
            if exit_code is not None
            else Sentence(gettext_noop("not running"))
        )
        return RuntimeStatus(running=False, detail=detail, exit_code=exit_code)

    def start(self, instance, *, recreate: bool = False) -> str:
        current = self.status(instance)
        if current.running:
            raise RuntimeFailure(
                Sentence(
                    gettext_noop("%(name)s is already running (%(state)s)."), name=instance.name, state=current.detail
                )
            )
        if not instance.command:
            raise RuntimeFailure(Sentence(gettext_noop("%(name)s has no command to run."), name=instance.name))
        path = log_path(instance)
        rotate_log(path)
        env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
        env.update(instance.env or {})
        if instance.gpu_indices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in instance.gpu_indices)
        cwd = instance.working_dir or None
        if cwd and not Path(cwd).is_dir():
            raise RuntimeFailure(Sentence(gettext_noop("Working directory %(path)s does not exist."), path=cwd))
        with open(path, "ab") as log_file:
            try:
                child = subprocess.Popen(
                    launch_command(instance, instance.command),
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, signalled as one
                    close_fds=True,
                )
            except OSError as exc:
                raise RuntimeFailure(
                    Sentence(
                        gettext_noop("Could not run %(program)r: %(why)s."),
                        program=instance.command[0],
                        why=exc.strerror or str(exc),
                    )
                ) from exc
        with _children_lock:
            _children[child.pid] = child
        record = {"pid": child.pid, "pgid": child.pid, "start_ticks": _start_ticks(child.pid), "started": time.time()}
        _pid_path(instance).write_text(json.dumps(record))
        return Sentence(gettext_noop("spawned pid %(pid)s"), pid=child.pid)

    def recreate_problem(self, instance) -> None:
        return None  # a process is always started afresh from its command

    def stop(self, instance, timeout: float) -> StopResult:
        record = self._record(instance)
        began = time.monotonic()
        if record is None or not self.status(instance).running:
            _pid_path(instance).unlink(missing_ok=True)
            return StopResult(forced=False, seconds=0.0, detail=Sentence(gettext_noop("was not running")))
        pgid = record["pgid"]
        deadline = began + timeout
        # SIGTERM goes to the main process first, as `docker stop` does: a server with worker processes
        # (vLLM's engine core) lets them finish in-flight requests only when it shuts them down
        # itself; a signal to each of them at once aborts those requests. What is left of the group
        # once the main process has ended gets SIGTERM in turn, and all of it SIGKILL at the timeout.
        self._signal_leader(record, signal.SIGTERM)
        self._wait_leader_gone(record, deadline)
        if self._wait_gone(record, min(LEFT_BEHIND_GRACE, max(0.0, deadline - time.monotonic()))):
            return self._stopped(instance, began)
        self._signal(record, signal.SIGTERM)
        if self._wait_gone(record, max(0.0, deadline - time.monotonic())):
            return self._stopped(instance, began)
        self._signal(record, signal.SIGKILL)
        if not self._wait_gone(record, 10):
            raise RuntimeFailure(f"Processes {_group_pids(pgid, record.get('start_ticks'))} survived SIGKILL.")
        _pid_path(instance).unlink(missing_ok=True)
        seconds = time.monotonic() - began
        killed = Sentence(gettext_noop("killed after %(seconds).0f s without exiting"), seconds=timeout)
        return StopResult(forced=True, seconds=seconds, detail=killed)

    @staticmethod
    def _stopped(instance, began: float) -> StopResult:
        _pid_path(instance).unlink(missing_ok=True)
        seconds = time.monotonic() - began
        exited = Sentence(gettext_noop("exited %(seconds).1f s after SIGTERM"), seconds=seconds)
        return StopResult(forced=False, seconds=seconds, detail=exited)

    @staticmethod
    def _signal_leader(record: dict, signum: int) -> None:
        """Signal the main process, if it is still the one started (pid and start time)."""
        pid = record["pid"]
        if _reap(pid) is not None or _start_ticks(pid) != record.get("start_ticks"):
            return
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise RuntimeFailure(f"Not allowed to signal pid {pid} ({exc.strerror}): it runs as another user.") from exc

    @staticmethod
    def _wait_leader_gone(record: dict, deadline: float) -> None:
        pid = record["pid"]
        while time.monotonic() < deadline:
            if _reap(pid) is not None or not _running(pid, record.get("start_ticks")):
                return
            time.sleep(0.05)

    def signal_supervisor(self, instance, supervisor_pid: int, signum: int) -> bool:
        """Signal the instance's main process if it is the supervisor the server named (its pid);
        False when it is not, so a process that would die of the signal never gets it."""
        record = self._record(instance)
        if record is None or record["pid"] != supervisor_pid:
            return False
        self._signal_leader(record, signum)
        return True

    def log_tail(self, instance, lines: int = 50) -> list[str]:
        return tail_lines(log_path(instance), lines)

    def log_cursor(self, instance) -> "FileCursor":
        return FileCursor(log_path(instance), rotate=True)

    def log_disk(self, instance) -> dict | None:
        try:
            fs = os.statvfs(log_path(instance).parent)
        except OSError:
            return None
        return {
            "free": fs.f_bavail * fs.f_frsize,
            "total": fs.f_blocks * fs.f_frsize,
            # Some filesystems (btrfs) have no fixed inode count: 0 of 0, never "out of inodes".
            "inodes_free": fs.f_favail,
            "inodes_total": fs.f_files,
        }

    @staticmethod
    def _signal(record: dict, signum: int) -> None:
        """Signal the instance's process group, and only if it is still ours (see _group_pids)."""
        pgid = record["pgid"]
        if not _group_pids(pgid, record.get("start_ticks")):
            return
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise RuntimeFailure(
                f"Not allowed to signal process group {pgid} ({exc.strerror}): it runs as another user."
            ) from exc

    @staticmethod
    def _wait_gone(record: dict, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            _reap(record["pid"])
            if not _group_pids(record["pgid"], record.get("start_ticks")):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


class CutLine(bytes):
    """The head of a line too long to keep whole, with the line's true length in bytes (a floor
    when the line had not ended: `complete` is False)."""

    def __new__(cls, head: bytes, length: int, complete: bool = True):
        line = super().__new__(cls, head)
        line.length, line.complete = length, complete
        return line


class FileCursor:
    """New lines of a log file since the last read. Survives copy-truncate rotation
    (the file shrinks) and replacement (a new inode); a huge line is cut, not buffered: its head is
    kept until it ends, then shipped with the length it had in truth.

    With `rotate`, the cursor (the host's log follower) also rotates the file once it has read it
    past INSTANCE_LOG_MAX_BYTES: a server that runs for weeks is never restarted to rotate its log,
    and the lines written between its read and the rotation are read from the rotated copy."""

    CHUNK = 4 * 1024 * 1024
    MAX_LINE_BYTES = 64 * 1024

    def __init__(self, path: Path, backlog_bytes: int = 64 * 1024, rotate: bool = False):
        self.path = path
        self.backlog_bytes = backlog_bytes
        self.rotate = rotate
        self.inode: int | None = None
        self.offset = 0
        self.partial = b""
        self.discarding = False  # inside a line whose head was kept (or, on first sight, not wanted)
        self.head: bytes | None = None  # the kept head of the long line being discarded
        self.length = 0  # that line's bytes so far

    def read(self) -> list[bytes]:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return []
        lost = []
        if stat.st_ino != self.inode:
            first = self.inode is None
            lost = self._unfinished()
            self.inode, self.partial = stat.st_ino, b""
            # On first sight show only the recent past; a new file is read from its start.
            self.offset = max(0, stat.st_size - self.backlog_bytes) if first else 0
            self.discarding = self.offset > 0  # the first line is probably cut
        elif stat.st_size < self.offset:
            lost = self._unfinished()
            self.offset, self.partial, self.discarding = 0, b"", False
        if stat.st_size == self.offset:
            return lost
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.CHUNK)
        self.offset += len(data)
        return lost + self._split(data) + self._rotated()

    def _rotated(self) -> list[bytes]:
        """Rotate the file once read past its limit; the lines that reached it since the read above,
        read from the copy. The file is the same (same inode) and starts again from empty; a line cut
        by the rotation goes on in it."""
        limit = settings.INSTANCE_LOG_MAX_BYTES
        if not self.rotate or limit <= 0 or self.offset < limit or not rotate_log(self.path):
            return []
        with open(self.path.with_name(f"{self.path.name}.1"), "rb") as copy:
            copy.seek(self.offset)
            data = copy.read(self.CHUNK)
        self.offset = 0
        return self._split(data)

    def _unfinished(self) -> list[bytes]:
        """A long line the file lost before it ended (rotation): shipped with the length it reached."""
        if self.head is None:
            return []
        line = CutLine(self.head, self.length, complete=False)
        self.head, self.discarding = None, False
        return [line]

    def _split(self, data: bytes) -> list[bytes]:
        lines = []
        if self.discarding:
            newline = data.find(b"\n")
            if newline < 0:
                self.length += len(data)
                return []
            if self.head is not None:
                lines.append(CutLine(self.head, self.length + newline))
            data, self.discarding, self.head = data[newline + 1 :], False, None
        pieces = (self.partial + data).split(b"\n")
        self.partial = pieces.pop()
        lines += pieces
        if len(self.partial) > self.MAX_LINE_BYTES:
            self.head, self.length = self.partial[: self.MAX_LINE_BYTES], len(self.partial)
            self.partial, self.discarding = b"", True
        return lines


def tail_lines(path: Path, lines: int, max_bytes: int = 256 * 1024) -> list[str]:
    """The last lines of a file, decoded leniently, reading at most max_bytes."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]
