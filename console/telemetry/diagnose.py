"""The checklist an operator runs before restarting, in plain words.

The four rows of the runbook — GPU memory, duplicate processes, connections,
log tail — evaluated on the recent samples, with the server's host memory, the
disk that holds its log and, where the engine reports one (vLLM), its KV cache;
and a verdict: soft decay (a restart is the cure), or something a restart will
not fix for long.
"""

from dataclasses import dataclass
from datetime import timedelta
from statistics import median

from django.utils import timezone
from django.utils.translation import gettext as _

from console.host.logs import recent_lines
from console.host.logscan import signatures
from console.telemetry.models import Sample
from console.telemetry.rules import Finding, baseline_p95, log_disk_free, log_rotation

WINDOW = timedelta(minutes=15)
MEMORY_NEAR_FULL = 0.92  # of the GPUs' total
MEMORY_SWING = 0.20  # of total, max - min over the window
CLOSE_WAIT_MANY = 20
ESTABLISHED_MANY = 200
SLOW_FACTOR = 2.0  # p95 over its own baseline (rules.baseline_p95)
SLOW_FLOOR_MS = 50.0  # ignore doubling of tiny latencies
KV_CACHE_FULL = 0.95  # of an engine's KV cache (vLLM): new requests wait, running ones are preempted
RSS_GROWTH = 0.25  # of the server's host memory over the window ...
RSS_GROWTH_FLOOR = 256 * 2**20  # ... and at least this much: a leak (vLLM's vision models, #15597)
RSS_SETTLE_SECONDS = 120  # a process's host memory is judged from this long after its start
DISK_FULL = 0.05  # free share of the log's disk (bytes or inodes) under which writes are about to block
DISK_LOW = 0.15


@dataclass
class Diagnosis:
    verdict: str
    advice: str
    findings: list[Finding]
    samples: int

    def summary(self) -> dict:
        """For the API and the command line: the verdict, the advice and each row with its evidence."""
        rows = [{"rule": f.rule, "level": f.level, "summary": f.summary, "evidence": f.evidence} for f in self.findings]
        return {"verdict": self.verdict, "advice": self.advice, "samples": self.samples, "findings": rows}


def _gib(n) -> str:
    return f"{n / 2**30:.1f} GiB"


def _mib(n) -> str:
    return _gib(n) if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _memory(samples: list[Sample]) -> Finding:
    used = [(s.gpu_used, s.gpu_total) for s in samples if s.gpu_total]
    device_used = []
    for s in samples:
        devices = (s.data.get("gpu") or {}).get("devices") or []
        if devices:
            device_used.append((sum(d["used"] for d in devices), sum(d["total"] for d in devices)))
    series = device_used or [(u, t) for u, t in used if u is not None]
    if not series:
        nvml = next((s.data.get("nvml") for s in samples if s.data.get("nvml")), "")
        return Finding("gpu_memory", "unknown", _("No GPU figures (%(why)s).") % {"why": nvml or _("no samples")})
    current, total = series[-1]
    values = [u for u, _t in series]
    swing = (max(values) - min(values)) / total
    evidence = [_("%(used)s of %(total)s in use now") % {"used": _gib(current), "total": _gib(total)}]
    latest = samples[-1]
    if latest.reserved and latest.allocated is not None:
        evidence.append(
            _("allocator: %(res)s reserved, %(alloc)s in tensors (fragmentation %(frag).0f%%)")
            % {"res": _gib(latest.reserved), "alloc": _gib(latest.allocated), "frag": (latest.fragmentation or 0) * 100}
        )
    if current / total >= MEMORY_NEAR_FULL:
        return Finding("gpu_memory", "bad", _("GPU memory is nearly full."), evidence)
    if swing >= MEMORY_SWING:
        evidence.append(_("swung by %(pct).0f%% of total in 15 min") % {"pct": swing * 100})
        return Finding("gpu_memory", "warn", _("GPU memory use swings widely."), evidence)
    return Finding("gpu_memory", "ok", _("GPU memory is steady and has room."), evidence)


def _duplicates(latest: Sample, instance) -> Finding:
    data = latest.data
    evidence = []
    others = [p for p in (data.get("gpu") or {}).get("processes", []) if not p.get("ours")]
    for proc in others:
        evidence.append(
            _("pid %(pid)s holds %(used)s on GPU %(gpu)s")
            % {"pid": proc["pid"], "used": _gib(proc["used"]), "gpu": proc["gpu"]}
        )
    listeners = (data.get("tcp") or {}).get("LISTEN", 0)
    if listeners > 1:
        evidence.append(_("%(n)d sockets listen on the instance's port") % {"n": listeners})
    server_pid = data.get("server_pid")
    if instance.runtime == "process" and server_pid and data.get("pids") and server_pid not in data["pids"]:
        evidence.append(
            _("the server answering on the port is pid %(pid)s, which the console did not start") % {"pid": server_pid}
        )
    if evidence:
        return Finding("processes", "bad", _("Other server processes are running beside this instance."), evidence)
    pids = data.get("pids") or []
    return Finding("processes", "ok", _("One server, no stray processes on its GPUs."), [_("pids %(p)s") % {"p": pids}])


def _connections(latest: Sample) -> Finding:
    if latest.close_wait is None:
        return Finding("connections", "unknown", _("Connection states could not be read."))
    evidence = [
        _("%(e)d established, %(c)d close-wait, %(t)d time-wait")
        % {"e": latest.established, "c": latest.close_wait, "t": latest.time_wait}
    ]
    if latest.close_wait >= CLOSE_WAIT_MANY:
        return Finding(
            "connections", "bad", _("Many connections stuck in CLOSE_WAIT (leaked by the server)."), evidence
        )
    if latest.established >= ESTABLISHED_MANY:
        return Finding("connections", "warn", _("Unusually many open connections."), evidence)
    return Finding("connections", "ok", _("Connections look normal."), evidence)


def _log_tail(samples: list[Sample], lines: list[str]) -> Finding:
    counts: dict[str, int] = {}
    for s in samples:
        for name, n in (s.data.get("signatures") or {}).items():
            counts[name] = counts.get(name, 0) + n
    if not counts:
        for name, n in signatures(lines).items():
            counts[name] = n
    labels = {
        "cuda_oom": _("CUDA out of memory"),
        "cuda_error": _("CUDA errors"),
        "timeout": _("timeouts"),
        "traceback": _("tracebacks"),
    }
    evidence = [f"{labels.get(name, name)}: {n}" for name, n in sorted(counts.items()) if n]
    if counts.get("cuda_oom") or counts.get("cuda_error"):
        return Finding("log_tail", "bad", _("The log shows CUDA errors or out-of-memory."), evidence)
    if any(counts.values()):
        return Finding("log_tail", "warn", _("The log shows timeouts or errors."), evidence)
    return Finding("log_tail", "ok", _("No OOM, timeout or CUDA error in the recent log."))


def _kv_cache(samples: list[Sample]) -> Finding | None:
    """An engine's KV cache (vLLM): full, and requests preempted (recomputed) meanwhile. None where
    the server does not report one."""
    engines = [s.data.get("engine") or {} for s in samples]
    usage = [e.get("kv_cache_usage") for e in engines if isinstance(e.get("kv_cache_usage"), int | float)]
    if not usage:
        return None
    preempted = [e.get("preemptions") for e in engines if isinstance(e.get("preemptions"), int | float)]
    grew = preempted[-1] - min(preempted) if preempted else 0
    evidence = [
        _("%(pct).0f%% of the KV cache in use now, %(peak).0f%% at most")
        % {"pct": usage[-1] * 100, "peak": max(usage) * 100}
    ]
    if grew > 0:
        evidence.append(_("%(n)d requests preempted in 15 min") % {"n": grew})
    if max(usage) >= KV_CACHE_FULL and grew > 0:
        return Finding(
            "kv_cache", "warn", _("The KV cache runs full and requests are preempted: the load exceeds it."), evidence
        )
    return Finding("kv_cache", "ok", _("The KV cache has room."), evidence)


def _host_memory(samples: list[Sample]) -> Finding | None:
    """The server process's host memory (RSS) over the window: steady, or growing like a leak. Only
    the process serving now counts, once it has settled: a process that just started grows while it
    warms up and serves its first requests, and an earlier process's figures are another's."""
    serving = samples[-1].data.get("server_pid")
    rss = [
        s.rss
        for s in samples
        if s.rss and s.data.get("server_pid") == serving and (s.data.get("uptime") or 0) >= RSS_SETTLE_SECONDS
    ]
    if len(rss) < 3:
        return None
    growth = rss[-1] - min(rss)
    evidence = [_("%(now)s now, %(low)s at its lowest in 15 min") % {"now": _gib(rss[-1]), "low": _gib(min(rss))}]
    if growth >= RSS_GROWTH_FLOOR and growth >= RSS_GROWTH * min(rss):
        return Finding("host_memory", "warn", _("Host memory keeps growing: a leak that a restart frees."), evidence)
    return Finding("host_memory", "ok", _("Host memory is steady."), evidence)


def _log_disk(latest: Sample) -> Finding | None:
    """The disk that holds the server's log (the runbook: a log never rotated fills it, or its inodes,
    until writes block). None where the worker cannot see it (a container's)."""
    free = log_disk_free(latest.data.get("log_disk"))
    if free is None:
        return None
    disk = latest.data["log_disk"]
    evidence = [_("%(free)s free of %(total)s") % {"free": _gib(disk["free"]), "total": _gib(disk["total"])}]
    if free["inodes"] is not None:
        evidence.append(_("%(pct).1f%% of its inodes free") % {"pct": 100 * free["inodes"]})
    if free["least"] < DISK_FULL:
        return Finding(
            "log_disk", "bad", _("The disk that holds the log is nearly full: writes are about to block."), evidence
        )
    if free["least"] < DISK_LOW:
        return Finding("log_disk", "warn", _("The disk that holds the log is filling up."), evidence)
    return Finding("log_disk", "ok", _("The disk that holds the log has room."), evidence)


def _log_rotation(latest: Sample) -> Finding | None:
    """Whether the server's log is rotated (the runbook's logrotate): a log that is not grows until its
    disk is full. None where the worker could not tell."""
    kept = log_rotation(latest.data.get("log_rotation"))
    if kept is None:
        return None
    driver = kept["driver"]
    if kept["max_bytes"] is not None:
        evidence = _("%(driver)s, at most %(files)d files of %(size)s") % {
            "driver": driver,
            "files": kept["files"],
            "size": _mib(kept["max_bytes"]),
        }
        return Finding("log_rotation", "ok", _("The log is rotated."), [evidence])
    if driver == "none":
        return Finding("log_rotation", "ok", _("Docker keeps no log of this container (logging driver none)."))
    if kept["rotated"]:
        return Finding(
            "log_rotation", "ok", _("The log goes to Docker's %(driver)s driver, which keeps it.") % {"driver": driver}
        )
    if driver == "json-file":
        why = _(
            "Docker's json-file logging without max-size. A container keeps the log options it was created "
            "with: recreate it (restart with recreate, or a compose service's logging options and "
            "docker compose up --force-recreate) to apply limits."
        )
    else:
        why = _("INSTANCE_LOG_MAX_BYTES is 0: the console does not rotate this log.")
    return Finding("log_rotation", "warn", _("The log is never rotated: it grows until its disk is full."), [why])


def slower(current: float | None, baseline: float | None, factor: float = SLOW_FACTOR) -> bool:
    """Whether a p95 is `factor` times its baseline or more, and not a tiny latency."""
    return current is not None and baseline is not None and current >= SLOW_FLOOR_MS and current >= factor * baseline


def _latency(samples: list[Sample]) -> tuple[float | None, float | None]:
    """(baseline, now) p95 in ms: the process's own normal, and the last few samples."""
    with_p95 = [s for s in samples if s.p95_ms is not None]
    if len(with_p95) < 3:
        return None, None
    return baseline_p95(samples[-1]), median(s.p95_ms for s in with_p95[-3:])


def diagnose(instance, now=None) -> Diagnosis:
    now = now or timezone.now()
    samples = list(Sample.objects.filter(instance=instance, resolution=Sample.RAW, at__gte=now - WINDOW).order_by("at"))
    if not samples:
        return Diagnosis(
            "no_data", _("No samples in the last 15 minutes: is this host's worker running?"), [], samples=0
        )
    latest = samples[-1]
    lines = [entry["text"] for entry in recent_lines(instance.name)]
    baseline, current = _latency(samples)
    findings = [_memory(samples), _duplicates(latest, instance), _connections(latest), _log_tail(samples, lines)]
    optional = (_kv_cache(samples), _host_memory(samples), _log_disk(latest), _log_rotation(latest))
    findings += [f for f in optional if f is not None]
    slow = slower(current, baseline)
    if baseline is not None:
        level = "warn" if slow else "ok"
        summary = _("Responses are slower than after the last start.") if slow else _("Latency is at its baseline.")
        findings.append(
            Finding(
                "latency",
                level,
                summary,
                [_("p95 %(now).0f ms, baseline %(base).0f ms") % {"now": current, "base": baseline}],
                figures={"p95_ms": current, "baseline_ms": baseline},
            )
        )
    by = {f.rule: f for f in findings}
    leaking = "host_memory" in by and by["host_memory"].level == "warn"
    if latest.status == "down":
        verdict, advice = "down", _("The instance is down: read the log tail, then restart it.")
    elif "log_disk" in by and by["log_disk"].level == "bad":
        verdict, advice = (
            "disk_full",
            _(
                "The disk that holds the log is nearly full: the server will block on its next writes, and a "
                "restart frees nothing. Remove old files (rotated logs, checkpoints) or grow the disk."
            ),
        )
    elif by["processes"].level == "bad":
        verdict, advice = (
            "duplicates",
            _("Stop the stray processes first; a restart alone may leave them holding GPU memory or the port."),
        )
    elif by["gpu_memory"].level == "bad" and by["log_tail"].level == "bad":
        verdict, advice = (
            "memory_pressure",
            _("GPU memory is exhausted. A restart helps only for a while: lower the concurrency or image size limits."),
        )
    elif by["connections"].level == "bad":
        verdict, advice = (
            "connection_leak",
            _("Leaked connections: a restart frees them; check client timeouts and disconnect handling."),
        )
    elif (slow or leaking) and by["gpu_memory"].level != "bad" and by["log_tail"].level == "ok":
        verdict = "soft_decay"
        advice = (
            _("Memory has room and the log is clean, yet it is slower: soft decay. A restart is recommended.")
            if slow
            else _("The log is clean but host memory keeps growing: soft decay. A restart frees it.")
        )
    elif "kv_cache" in by and by["kv_cache"].level == "warn":
        verdict, advice = (
            "kv_pressure",
            _(
                "The KV cache is too small for the load: a restart will not help. Lower max-num-seqs or "
                "max-model-len, give the engine more memory, or add a replica."
            ),
        )
    elif by["log_tail"].level == "bad":
        verdict, advice = (
            "errors",
            _("Errors in the log: read them before restarting; a restart may not fix the cause."),
        )
    elif off := [f.summary for f in findings if f.level in ("warn", "bad")]:
        # Memory nearly full or swinging alone, timeouts in the log, many open connections: none of them
        # a pattern a restart is known to cure, and not "nothing points to a problem" either.
        verdict, advice = (
            "watch",
            _("No pattern a restart is known to cure, but these rows are off: %(rows)s Watch them.")
            % {"rows": " ".join(off)},
        )
    else:
        verdict, advice = "healthy", _("Nothing in the checklist points to a problem; no restart needed.")
    return Diagnosis(verdict, advice, findings, samples=len(samples))
