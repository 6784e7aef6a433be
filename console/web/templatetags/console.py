"""What pages hand to static/console/live.js, which renders every live figure and badge (one place),
and stored sentences rendered in the reader's language."""

from django import template
from django.utils.html import json_script
from django.utils.translation import gettext_lazy as _

from console.operations.models import Operation
from console.sentences import render

register = template.Library()

STATUS_LABELS = {
    "ready": _("ready"),
    "loading": _("loading"),
    "degraded": _("degraded"),
    "draining": _("draining"),
    "restarting": _("restarting"),
    "down": _("down"),
    "unknown": _("no data"),
}


# Words live.js writes itself: chart legends, a try's states, NVML's notes (sentences by message id).
LIVE_WORDS = {
    "used": _("used"),
    "total": _("total"),
    "reserved": _("reserved"),
    "in tensors": _("in tensors"),
    "req/s": _("req/s"),
    "established": _("established"),
    "close-wait": _("close-wait"),
    "time-wait": _("time-wait"),
    "queued": _("queued"),
    "running": _("running"),
    "done": _("done"),
    "failed": _("failed"),
    "no NVIDIA GPU": _("no NVIDIA GPU"),
    "no NVIDIA GPU (%(why)s)": _("no NVIDIA GPU (%(why)s)"),
    "not running": _("not running"),
    "health probe failed": _("health probe failed"),
    "no answer within %(seconds)s s": _("no answer within %(seconds)s s"),
    "unreachable: %(why)s": _("unreachable: %(why)s"),
    "/health did not return JSON": _("/health did not return JSON"),
    "/health did not return a JSON object": _("/health did not return a JSON object"),
    "no report from host %(host)s for %(seconds)s s": _("no report from host %(host)s for %(seconds)s s"),
    "online": _("online"),
    "offline": _("offline"),
    "reported %(seconds)s s ago": _("reported %(seconds)s s ago"),
    "loading": _("loading"),
    "ready, loaded in %(seconds).1f s": _("ready, loaded in %(seconds).1f s"),
    "discarded": _("discarded"),
    "until %(until)s, by %(by)s": _("until %(until)s, by %(by)s"),
    "on hold": _("on hold"),
}


@register.simple_tag
def status_labels_json():
    """The badge labels and the words live.js writes, in the page's language."""
    labels = json_script({k: str(v) for k, v in STATUS_LABELS.items()}, "status-labels")
    words = json_script({k: str(v) for k, v in LIVE_WORDS.items()}, "live-words")
    return labels + words


@register.filter
def said(step: dict, key: str = "said") -> str:
    """A stored step's detail (or, with "name_said", its name) in the reader's language."""
    fallback = step.get("detail" if key == "said" else "name", "")
    return render(step.get(key, fallback))


@register.filter
def error_said(operation) -> str:
    return render(operation.error_said) if operation.error_said else operation.error


STEP_STATES = {"done": _("done"), "failed": _("failed"), "running": _("running"), "interrupted": _("interrupted")}


@register.filter
def step_state(state: str) -> str:
    return str(STEP_STATES.get(state, state))


ENTRY_STATES = {"skipped": _("Skipped"), "not started": _("Not started"), **dict(Operation.State.choices)}


@register.filter
def entry_state(state: str) -> str:
    """A rollout entry's state (its operation's, or why it has none) in the reader's language."""
    return str(ENTRY_STATES.get(state, state))


@register.filter
def gib(value) -> str:
    """Bytes as GiB with one decimal; a dash for nothing."""
    return f"{value / 2**30:.1f}" if isinstance(value, int | float) else "–"


@register.filter
def figure(value, unit: str) -> str:
    """A figure of an operation's effect in its unit: ms (seconds from 10 s), bytes (MiB, GiB from
    1 GiB), a fraction as a percentage, a count; a dash for nothing."""
    if not isinstance(value, int | float):
        return "–"
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.0f} ms"
    if unit == "bytes":
        return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"
    if unit == "fraction":
        return f"{value * 100:.0f} %"
    return f"{value:.0f}"
