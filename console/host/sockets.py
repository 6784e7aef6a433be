"""TCP connection states on an instance's port, read from its network namespace.

`/proc/<pid>/net/tcp` lists the sockets of the namespace that process lives in,
so the same reader works for a bare process and for a container (through the
host PID of any process inside it) — the `ss -tnp | grep 8080` of the checklist.
"""

import os
import threading
from collections import Counter
from pathlib import Path

STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def parse_ports(text: str) -> dict[int, Counter]:
    """The states of the sockets of one /proc net/tcp table, counted by local port."""
    ports: dict[int, Counter] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, state = fields[1], fields[3]
        try:
            local_port = int(local.rsplit(":", 1)[1], 16)
        except (IndexError, ValueError):
            continue
        ports.setdefault(local_port, Counter())[STATES.get(state.upper(), state)] += 1
    return ports


def parse(text: str, port: int) -> Counter:
    """Count the states of sockets whose local port is `port` in one /proc net/tcp table."""
    return parse_ports(text).get(port, Counter())


def _ports(pid: int, proc: Path) -> dict[int, Counter] | None:
    """Every port's states in the namespace of `pid` (IPv4 and IPv6); None if it cannot be read."""
    ports: dict[int, Counter] = {}
    found = False
    for table in ("tcp", "tcp6"):
        try:
            text = (proc / str(pid) / "net" / table).read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found = True
        for port, counts in parse_ports(text).items():
            ports.setdefault(port, Counter()).update(counts)
    return ports if found else None


def tcp_states(pid: int, port: int, proc: Path = Path("/proc")) -> Counter | None:
    """States on `port` in the namespace of `pid` (IPv4 and IPv6); None if it cannot be read."""
    ports = _ports(pid, proc)
    return None if ports is None else Counter(ports.get(port, Counter()))


class TcpTables:
    """The TCP tables of one sampling round, each network namespace's read once: the host's holds
    every bare instance's sockets, and reading it again for each instance made a round's cost grow
    with the square of the instances (docs/BENCHMARKS.md, scale)."""

    def __init__(self, proc: Path = Path("/proc")):
        self.proc = proc
        self._lock = threading.Lock()
        self._tables: dict[int, dict[int, Counter] | None] = {}

    def states(self, pid: int, port: int) -> Counter | None:
        try:
            namespace = os.stat(self.proc / str(pid) / "ns" / "net").st_ino
        except OSError:  # not ours to look at, or gone: read it directly
            return tcp_states(pid, port, self.proc)
        with self._lock:
            if namespace not in self._tables:
                self._tables[namespace] = _ports(pid, self.proc)
            ports = self._tables[namespace]
        return None if ports is None else Counter(ports.get(port, Counter()))
