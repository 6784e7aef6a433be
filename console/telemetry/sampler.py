"""One sampling round on a host: every instance's health, GPU, connections and log errors.

Runs in the host's worker (it reads that host's NVML, /proc and Docker). Each
sample is stored for charts and rules, and published to the browsers.
"""

import logging
import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import connection, models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.utils import timezone

from console import deadlines
from console.host import gpu, sockets
from console.host.engines import server_for
from console.host.identity import worker_identity
from console.host.logs import current_follower
from console.host.process import ProcessGroups
from console.host.runtime import RuntimeFailure
from console.host.runtimes import runtime_for
from console.host.server import Probe
from console.instances.models import Host, Instance
from console.live import events
from console.sentences import Sentence, gettext_noop, said
from console.telemetry.health import readable
from console.telemetry.models import Sample
from console.telemetry.signals import samples_recorded

log = logging.getLogger(__name__)
# A round's samples reach the dashboard in batches at most this old: one message per open dashboard
# for a batch instead of one per sample.
BATCH_SECONDS = 0.05


def port_of(base_url: str) -> int | None:
    parts = urlsplit(base_url)
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None


def derive_status(running: bool, probe: Probe) -> tuple[str, str]:
    """The status and its explanation, from what the runtime and the probe say. (What the console
    is doing to the instance meanwhile, a restart say, is the operations' business, not a sample's.)"""
    if not running:
        return "down", Sentence(gettext_noop("not running"))
    if not probe.ok:
        # A server that answers but cannot serve (an engine stall) is degraded, not down; either way
        # the probe failed, which is what the watchdog's liveness counts.
        state = "degraded" if probe.state == "degraded" else "down"
        return state, probe.error or Sentence(gettext_noop("health probe failed"))
    state = probe.state or "ready"
    if state in ("loading", "draining", "degraded"):
        return state, probe.health.get("load_error") or state
    return "ready", ""


@dataclass
class Round:
    """What a sampling round reads once for all its instances: NVML, the process table and each
    network namespace's TCP table (read per instance, they made a round grow with the square of
    the instances)."""

    gpus: gpu.Snapshot = field(default_factory=gpu.Snapshot)
    groups: ProcessGroups = field(default_factory=ProcessGroups)
    tcp: sockets.TcpTables = field(default_factory=sockets.TcpTables)


def collect(instance, shared: Round, client: httpx.Client | None = None) -> dict:
    """Everything one sample says about one instance (no database writes)."""
    snapshot = shared.gpus
    runtime, runtime_error, rotation = None, "", None
    try:
        runtime = runtime_for(instance)
        status = runtime.status(instance, shared.groups)
        running, pids, rotation = status.running, status.pids, status.log_rotation
    except RuntimeFailure as exc:
        running, pids, runtime_error = False, [], str(exc)
    server = server_for(instance, client)
    probe = server.probe() if running else Probe(ok=False, ms=None)
    probe = replace(probe, health=readable(probe.health))
    state, detail = derive_status(running, probe)
    sample = {"status": state, "probe_ok": probe.ok, "probe_ms": round(probe.ms, 2) if probe.ms else None}
    sample.update(server.figures(probe.health))
    gpu_figures = snapshot.for_instance(instance.gpu_indices or [], pids)
    sample["gpu_used"], sample["gpu_total"] = gpu_figures.pop("gpu_used"), gpu_figures.pop("gpu_total")
    if sample["gpu_total"] is None:
        # No NVML (CPU host): the device figures the server itself reports, if any.
        sample["gpu_total"] = probe.health["allocator"]["device_total_bytes"]
    states = None
    port = port_of(instance.base_url)
    if pids and port:
        states = shared.tcp.states(pids[0], port)
    sample["established"] = states.get("ESTABLISHED", 0) if states is not None else None
    sample["close_wait"] = states.get("CLOSE_WAIT", 0) if states is not None else None
    sample["time_wait"] = states.get("TIME_WAIT", 0) if states is not None else None
    follower = current_follower()
    errors = follower.take_counts(instance.name) if follower is not None else Counter()
    sample["log_errors"] = sum(errors.values()) if follower is not None else None
    supervisor = probe.health["supervisor"] or {}
    sample["data"] = {
        "detail": detail or runtime_error,
        "detail_said": said(detail or runtime_error),
        "pids": pids,
        "probe_error": probe.error,
        "probe_timed_out": probe.timed_out,  # a hung server: a handover is asked of its supervisor at once
        "health_state": probe.state,
        "uptime": probe.health["uptime_seconds"],
        "server_pid": probe.health["pid"],
        # inference.supervisor's pid: a handover can be asked of it by signal when its model process hangs.
        "supervisor_pid": supervisor.get("pid"),
        "standby": supervisor.get("standby"),
        "tcp": dict(states) if states is not None else None,
        "signatures": dict(errors),
        "gpu": gpu_figures,
        "nvml": snapshot.error,
        "nvml_said": said(snapshot.error) if snapshot.error else None,
        "requests": probe.health["totals"]["requests"],
        "tokens_per_second": probe.health["timings"]["tokens_per_second"],
        "engine": probe.health["engine"],
        "log_disk": runtime.log_disk(instance) if runtime is not None else None,
        "log_rotation": rotation,
    }
    return sample


class DashboardBatch:
    """A round's samples for the dashboard, sent every BATCH_SECONDS rather than one by one: a batch
    goes `every` seconds after its first sample (a timer, so the last samples of a round never wait
    for a later one), or at the round's end."""

    def __init__(self, every: float = BATCH_SECONDS):
        self.every = every
        self.lock = threading.Lock()
        self.items: list[dict] = []
        self.timer: threading.Timer | None = None

    def add(self, instance_name: str, summary: dict) -> None:
        with self.lock:
            self.items.append({"instance": instance_name, "data": summary})
            if self.timer is None:
                self.timer = threading.Timer(self.every, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        with self.lock:
            items, self.items = self.items, []
            if self.timer is not None:
                self.timer.cancel()  # a no-op where the timer itself flushes
                self.timer = None
        if items:
            events.publish_samples(items)


def finite(value):
    """`value` with every float that is not a number (NaN, infinities: Python's JSON reads them from a
    server's answer) made None, through dicts and lists. PostgreSQL's jsonb refuses them, which would
    lose the whole sample, and a browser's JSON.parse too, which would stop its live panels."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def fitted(sample: dict) -> dict:
    """Each count within its column's range, else None: a server's 2**70 bytes would have the whole
    row refused by the database."""
    fitted = dict(sample)
    for column in Sample._meta.concrete_fields:
        value = fitted.get(column.name)
        if isinstance(column, models.IntegerField) and isinstance(value, int | float):
            low, high = BaseDatabaseOperations.integer_field_ranges[column.get_internal_type()]
            fitted[column.name] = value if low <= value <= high else None
    return fitted


def record(instance, sample: dict, batch: DashboardBatch | None = None) -> Sample:
    row = Sample.objects.create(instance=instance, at=timezone.now(), **fitted(finite(sample)))
    summary = {**row.summary(), "host": instance.host.name}
    events.publish(instance.name, events.SAMPLE, summary)
    if batch is None:
        events.publish_samples([{"instance": instance.name, "data": summary}])
    else:
        batch.add(instance.name, summary)
    return row


_warned: set[str] = set()


def sample_host(host_name: str, workers: int = 8) -> int:
    """One round over the host's enabled instances, probes in parallel. Returns samples stored.

    The round ends with the host's own report (its sign of life and NVML snapshot), written even
    when it has no instance. Receivers of `samples_recorded` (the watchdog) hear about the round
    once it is stored.
    """
    instances = list(Instance.objects.filter(host__name=host_name, enabled=True).select_related("host"))
    this_round = Round()
    snapshot = this_round.gpus
    owners: dict[int, str] = {}

    def probe(instance) -> dict:
        try:
            return collect(instance, this_round, client)
        finally:
            connection.close()  # pool threads end with the round; so do connections they opened

    # Probes run on the pool; each sample is written here as its probe ends, on this thread's one
    # connection (a connection per sample cost tens of ms between a sample and its row: the
    # dashboard's latency, docs/BENCHMARKS.md).
    sampled = []
    batch = DashboardBatch()
    if instances:
        with deadlines.client() as client, ThreadPoolExecutor(max_workers=min(workers, len(instances))) as pool:
            probes = {pool.submit(probe, instance): instance for instance in instances}
            for done in as_completed(probes):
                instance = probes[done]
                try:
                    row = record(instance, done.result(), batch)
                except Exception:  # one broken instance never stops the others' samples
                    log.exception("sampling %s failed", instance.name)
                    continue
                owners.update(dict.fromkeys(row.data.get("pids") or [], instance.name))
                sampled.append(row.instance_id)
        batch.flush()
    Host.objects.filter(name=host_name).update(
        seen_at=timezone.now(),
        gpus=snapshot.for_host(owners),
        nvml=str(snapshot.error)[:300],
        reported_by=worker_identity(),
    )
    if host_name != settings.CONSOLE_HOST_NAME and host_name not in _warned:
        # A worker on another host's queue reads its own machine's NVML and processes: said once.
        _warned.add(host_name)
        log.warning("sampled host %s from a worker set up for host %s", host_name, settings.CONSOLE_HOST_NAME)
    if instances:
        samples_recorded.send(sender=Sample, host_name=host_name, instance_ids=sampled)
    return len(sampled)
