"""One sampling round on a host: every instance's health, GPU, connections and log errors.

Runs in the host's worker (it reads that host's NVML, /proc and Docker). Each
sample is stored for charts and rules, and published to the browsers.
"""

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
from django.db import connection
from django.utils import timezone

from console.live import events
from console.operations.models import Operation
from console.runtimes.base import RuntimeFailure, runtime_for
from console.telemetry import gpu, health, sockets
from console.telemetry.follow import current_follower
from console.telemetry.models import FIGURES, Sample

log = logging.getLogger(__name__)

STATUSES = ("ready", "loading", "degraded", "draining", "restarting", "down")


def port_of(base_url: str) -> int | None:
    parts = urlsplit(base_url)
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None


def derive_status(running: bool, probe: health.Probe, active_kind: str | None) -> tuple[str, str]:
    """The badge and its explanation, from what the runtime, the probe and operations say."""
    if active_kind:
        return "restarting", f"{active_kind.replace('_', ' ')} in progress"
    if not running:
        return "down", "not running"
    if not probe.ok:
        return "down", probe.error or "health probe failed"
    state = probe.health.get("state", "ready")
    if state in ("loading", "draining", "degraded"):
        return state, probe.health.get("load_error") or state
    return "ready", ""


def collect(instance, snapshot: gpu.Snapshot, client: httpx.Client | None = None) -> dict:
    """Everything one sample says about one instance (no database writes)."""
    runtime_error = ""
    try:
        status = runtime_for(instance).status(instance)
        running, pids = status.running, status.pids
    except RuntimeFailure as exc:
        running, pids, runtime_error = False, [], str(exc)
    probe = health.probe(instance.base_url, client=client) if running else health.Probe(ok=False, ms=None)
    active = instance.operations.filter(state__in=Operation.ACTIVE_STATES).values_list("kind", flat=True).first()
    state, detail = derive_status(running, probe, active)
    sample = {"status": state, "probe_ok": probe.ok, "probe_ms": round(probe.ms, 2) if probe.ms else None}
    sample.update(health.figures(probe.health))
    gpu_figures = snapshot.for_instance(instance.gpu_indices or [], pids)
    sample["gpu_used"], sample["gpu_total"] = gpu_figures.pop("gpu_used"), gpu_figures.pop("gpu_total")
    if sample["gpu_total"] is None:
        # No NVML (CPU host): the device figures the server itself reports, if any.
        allocator = probe.health.get("allocator") or {}
        sample["gpu_total"] = allocator.get("device_total_bytes")
    states = None
    port = port_of(instance.base_url)
    if pids and port:
        states = sockets.tcp_states(pids[0], port)
    sample["established"] = states.get("ESTABLISHED", 0) if states is not None else None
    sample["close_wait"] = states.get("CLOSE_WAIT", 0) if states is not None else None
    sample["time_wait"] = states.get("TIME_WAIT", 0) if states is not None else None
    follower = current_follower()
    errors = follower.take_counts(instance.name) if follower is not None else Counter()
    sample["log_errors"] = sum(errors.values()) if follower is not None else None
    sample["data"] = {
        "detail": detail or runtime_error,
        "pids": pids,
        "probe_error": probe.error,
        "health_state": probe.health.get("state"),
        "uptime": probe.health.get("uptime_seconds"),
        "server_pid": probe.health.get("pid"),
        "tcp": dict(states) if states is not None else None,
        "signatures": dict(errors),
        "gpu": gpu_figures,
        "nvml": snapshot.error,
        "requests": (probe.health.get("totals") or {}).get("requests"),
        "tokens_per_second": (probe.health.get("timings") or {}).get("tokens_per_second"),
    }
    return sample


def record(instance, sample: dict) -> Sample:
    row = Sample.objects.create(instance=instance, at=timezone.now(), **sample)
    events.publish(instance.name, events.SAMPLE, as_event(row))
    return row


def as_event(row: Sample) -> dict:
    """What browsers get: the figures, the badge and a few facts for the dashboard."""
    event = {name: getattr(row, name) for name in FIGURES}
    event.update(
        at=row.at.timestamp(),
        status=row.status,
        detail=row.data.get("detail", ""),
        uptime=row.data.get("uptime"),
        devices=(row.data.get("gpu") or {}).get("devices", []),
        nvml=row.data.get("nvml", ""),
    )
    return event


def sample_host(host_name: str, workers: int = 8) -> int:
    """One round over the host's enabled instances, probes in parallel. Returns samples stored."""
    from console.instances.models import Instance

    instances = list(Instance.objects.filter(host__name=host_name, enabled=True).select_related("host"))
    if not instances:
        return 0
    snapshot = gpu.Snapshot()

    def one(instance) -> bool:
        try:
            record(instance, collect(instance, snapshot, client))
        except Exception:  # one broken instance never stops the others' samples
            log.exception("sampling %s failed", instance.name)
            connection.close()
            return False
        try:
            from console.schedules.watchdog import evaluate

            evaluate(instance)  # rules run where the fresh sample is, right after it
        except Exception:
            log.exception("watchdog of %s failed", instance.name)
        finally:
            connection.close()  # pool threads end with the round; so do their connections
        return True

    with httpx.Client() as client, ThreadPoolExecutor(max_workers=min(workers, len(instances))) as pool:
        return sum(pool.map(one, instances))
