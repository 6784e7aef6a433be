"""Follow the logs of a host's instances: ship new lines to browsers, count error signatures.

Runs as one thread in the host's worker process (next to the sampler, which
takes the counts), and in the console process in embedded mode.
"""

import logging
import threading
import time
from collections import Counter, deque

from django.core.cache import cache
from django.db import close_old_connections

from console.host import logscan
from console.host.runtime import RuntimeFailure
from console.host.runtimes import runtime_for
from console.instances.models import Instance
from console.live import events

log = logging.getLogger(__name__)

TAIL_LINES = 500  # kept for a page that opens; the page itself caps what it holds
MAX_LINES_PER_EVENT = 2000
TAIL_FLUSH_SECONDS = 2.0


def tail_key(instance_name: str) -> str:
    return f"logtail:{instance_name}"


def recent_lines(instance_name: str) -> list[dict]:
    """The last lines the follower saw, for a page that has just opened ([] for anything else in
    the cache's place)."""
    lines = cache.get(tail_key(instance_name))
    if not isinstance(lines, list):
        return []
    return [
        line
        for line in lines
        if isinstance(line, dict) and isinstance(line.get("text"), str) and isinstance(line.get("level"), str)
    ]


class LogFollower:
    def __init__(self, host_names: list[str], interval: float = 0.25, refresh_seconds: float = 10.0):
        self.host_names = list(host_names)
        self.interval = interval
        self.refresh_seconds = refresh_seconds
        self._cursors: dict[str, object] = {}
        self._tails: dict[str, deque] = {}
        self._flushed: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._counts: dict[str, Counter] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._instances: list = []
        self._refreshed = 0.0

    # -- for the sampler
    def take_counts(self, instance_name: str) -> Counter:
        """Error signatures seen since the last call."""
        with self._lock:
            return self._counts.pop(instance_name, Counter())

    # -- lifecycle
    def start(self) -> "LogFollower":
        self._thread = threading.Thread(target=self._run, name="log-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # keep following; the next round may succeed
                log.exception("log follower round failed")
            self._stop.wait(self.interval)
        close_old_connections()

    def _refresh(self) -> None:
        close_old_connections()
        self._instances = list(
            Instance.objects.filter(host__name__in=self.host_names, enabled=True).select_related("host")
        )
        names = {i.name for i in self._instances}
        for gone in set(self._cursors) - names:
            self._cursors.pop(gone, None)
        self._refreshed = time.monotonic()

    def poll(self) -> int:
        """One round over every instance of the host; returns the number of lines shipped."""
        if time.monotonic() - self._refreshed > self.refresh_seconds:
            self._refresh()
        shipped = 0
        for instance in self._instances:
            cursor = self._cursors.get(instance.name)
            if cursor is None:
                try:
                    cursor = self._cursors[instance.name] = runtime_for(instance).log_cursor(instance)
                except RuntimeFailure:
                    continue
            raw = cursor.read()
            if raw:
                shipped += self._ship(instance.name, [logscan.clean(line) for line in raw])
        self._flush_tails()
        return shipped

    def _ship(self, name: str, lines: list[str]) -> int:
        entries = [{"text": text, "level": logscan.level(text)} for text in lines]
        for entry in entries:
            fields = logscan.structured(entry["text"])
            if fields:
                entry["fields"] = fields
        with self._lock:
            self._counts.setdefault(name, Counter()).update(logscan.signatures(lines))
        tail = self._tails.setdefault(name, deque(maxlen=TAIL_LINES))
        tail.extend(entries)
        self._dirty.add(name)
        for start in range(0, len(entries), MAX_LINES_PER_EVENT):
            events.publish(name, events.LOG_LINES, {"lines": entries[start : start + MAX_LINES_PER_EVENT]})
        return len(entries)

    def _flush_tails(self) -> None:
        now = time.monotonic()
        for name in list(self._dirty):
            if now - self._flushed.get(name, 0) >= TAIL_FLUSH_SECONDS:
                self._flushed[name] = now
                try:
                    cache.set(tail_key(name), list(self._tails[name]), timeout=None)
                except Exception as exc:  # the cache (Redis) is away: keep following, try again later
                    events.warn_throttled(f"could not store the log tail of {name}: {exc!r}")
                    continue
                self._dirty.discard(name)


_follower: LogFollower | None = None
_follower_lock = threading.Lock()


def start_follower(host_names: list[str]) -> LogFollower:
    """The process's follower for the hosts whose queues it serves, started once."""
    global _follower
    with _follower_lock:
        if _follower is None:
            _follower = LogFollower(host_names).start()
        return _follower


def current_follower() -> LogFollower | None:
    return _follower


def stop_follower() -> None:
    global _follower
    with _follower_lock:
        if _follower is not None:
            _follower.stop()
            _follower = None
