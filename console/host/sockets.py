"""TCP connection states on an instance's port, read from its network namespace.

`/proc/<pid>/net/tcp` lists the sockets of the namespace that process lives in,
so the same reader works for a bare process and for a container (through the
host PID of any process inside it) — the `ss -tnp | grep 8080` of the checklist.
"""

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


def parse(text: str, port: int) -> Counter:
    """Count the states of sockets whose local port is `port` in one /proc net/tcp table."""
    counts: Counter = Counter()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, state = fields[1], fields[3]
        try:
            local_port = int(local.rsplit(":", 1)[1], 16)
        except (IndexError, ValueError):
            continue
        if local_port == port:
            counts[STATES.get(state.upper(), state)] += 1
    return counts


def tcp_states(pid: int, port: int, proc: Path = Path("/proc")) -> Counter | None:
    """States on `port` in the namespace of `pid` (IPv4 and IPv6); None if it cannot be read."""
    counts: Counter = Counter()
    found = False
    for table in ("tcp", "tcp6"):
        try:
            text = (proc / str(pid) / "net" / table).read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found = True
        counts.update(parse(text, port))
    return counts if found else None
