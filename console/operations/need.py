"""Whether an instance needs a restart at all: the runbook's check before one ("not every slowdown is
cured by a restart"), asked by a rollout or schedule for "only those that need it" and by a script's
`only_if_needed`."""

import logging

from django.conf import settings
from django.utils import translation

from console.instances.models import Instance
from console.telemetry.diagnose import diagnose, slower

log = logging.getLogger(__name__)

# Rows a restart leaves as they are: off alone, they are no reason for one.
NOT_CURED = {"log_rotation"}


def healthy(instance: Instance) -> str | None:
    """Why the instance needs no restart by its checklist (Diagnose's verdict "healthy"), or None: it
    has something a restart may cure, something Diagnose says to look at, a p95 creeping up from its
    baseline (ONLY_IF_NEEDED_SLOWER_PERCENT), or no recent figures."""
    try:
        with translation.override("en"):  # kept in a rollout's entry and the audit, in English as they are
            found = diagnose(instance)
    except Exception:  # figures it cannot read: restarted, as without the check, never a rollout stuck
        log.exception("could not run the checklist of %s; restarting it", instance.name)
        return None
    off = {f.rule for f in found.findings if f.level in ("warn", "bad")}
    if found.verdict not in ("healthy", "watch") or (found.verdict == "watch" and not off <= NOT_CURED):
        return None
    latency = next((f for f in found.findings if f.rule == "latency"), None)
    factor = 1 + max(0, settings.ONLY_IF_NEEDED_SLOWER_PERCENT) / 100
    if latency is not None and slower(latency.figures["p95_ms"], latency.figures["baseline_ms"], factor):
        return None  # slower than its baseline, short of Diagnose's soft decay: restarted all the same
    why = "healthy by its checklist" + (f" ({latency.evidence[0]})" if latency and latency.evidence else "")
    if "log_rotation" in off:
        why += "; its log is never rotated, which a restart does not change (a new container does)"
    return why
