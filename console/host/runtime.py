"""The runtime protocol: how the console starts, stops and inspects an instance."""

from dataclasses import dataclass, field
from typing import Protocol


class RuntimeFailure(Exception):
    """An operation on an instance's runtime failed; the message is for the operator."""


@dataclass
class RuntimeStatus:
    running: bool
    pids: list[int] = field(default_factory=list)
    detail: str = ""
    exit_code: int | None = None
    # How the instance's log is kept: {"driver", "max_bytes" (None: it grows without limit, or another
    # program decides), "files"}; None where the runtime cannot tell.
    log_rotation: dict | None = None


@dataclass
class StopResult:
    forced: bool  # SIGKILL was needed
    seconds: float
    detail: str


class Runtime(Protocol):
    def status(self, instance, groups=None) -> RuntimeStatus:
        """How the instance is; `groups`: a sampling round's process table (process runtime)."""

    def start(self, instance, *, recreate: bool = False) -> str: ...

    def recreate_problem(self, instance) -> str | None:
        """Why `start(recreate=True)` would lose this instance's setup, or None."""

    def stop(self, instance, timeout: float) -> StopResult: ...

    def signal_supervisor(self, instance, supervisor_pid: int, signum: int) -> bool:
        """Signal the main process if it is the supervisor named; False if it is not."""

    def log_tail(self, instance, lines: int = 50) -> list[str]: ...

    def log_cursor(self, instance) -> "LogCursor": ...

    def log_disk(self, instance) -> dict | None:
        """{"free", "total", "inodes_free", "inodes_total"} of the filesystem that holds the instance's
        log (a full one blocks the server's writes); None where this worker cannot see it."""


class LogCursor(Protocol):
    def read(self) -> list[bytes]:
        """Raw log lines written since the last call (the recent past on the first)."""
