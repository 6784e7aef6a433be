"""Whether an instance needs a restart at all: the runbook's check before one ("not every slowdown is
cured by a restart"), asked by a rollout or schedule for "only those that need it" and by a script's
`only_if_needed`."""

import logging

from django.utils import translation

from console.instances.models import Instance
from console.telemetry.diagnose import diagnose

log = logging.getLogger(__name__)


def healthy(instance: Instance) -> str | None:
    """Why the instance needs no restart by its checklist (Diagnose's verdict "healthy"), or None: it
    has something a restart may cure, something Diagnose says to look at, or no recent figures."""
    try:
        with translation.override("en"):  # kept in a rollout's entry and the audit, in English as they are
            found = diagnose(instance)
    except Exception:  # figures it cannot read: restarted, as without the check, never a rollout stuck
        log.exception("could not run the checklist of %s; restarting it", instance.name)
        return None
    if found.verdict != "healthy":
        return None
    latency = next((f for f in found.findings if f.rule == "latency"), None)
    return "healthy by its checklist" + (f" ({latency.evidence[0]})" if latency and latency.evidence else "")
