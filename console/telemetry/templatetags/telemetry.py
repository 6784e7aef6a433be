"""Number formatting shared by pages; static/console/live.js formats live updates the same way."""

from django import template
from django.utils.html import json_script
from django.utils.translation import gettext_lazy as _

register = template.Library()
DASH = "–"
STATUS_LABELS = {
    "ready": _("ready"),
    "loading": _("loading"),
    "degraded": _("degraded"),
    "draining": _("draining"),
    "restarting": _("restarting"),
    "down": _("down"),
    "unknown": _("no data"),
}


@register.filter
def status_label(status) -> str:
    return str(STATUS_LABELS.get(status or "unknown", status))


@register.simple_tag
def status_labels_json():
    """The badge labels in the page's language, for live updates."""
    return json_script({k: str(v) for k, v in STATUS_LABELS.items()}, "status-labels")


def _number(value):
    """Templates pass "" for a missing sample's figures; anything not a number is missing."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


@register.filter
def gib(value) -> str:
    value = _number(value)
    if value is None:
        return DASH
    return f"{value / 2**30:.1f}"


@register.filter
def ms(value) -> str:
    value = _number(value)
    if value is None:
        return DASH
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


@register.filter
def uptime(seconds) -> str:
    seconds = _number(seconds)
    if seconds is None:
        return DASH
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


@register.filter
def percent_of(used, total) -> int:
    used, total = _number(used), _number(total)
    if not used or not total:
        return 0
    return max(0, min(100, round(used * 100 / total)))


@register.filter
def count(value) -> str:
    value = _number(value)
    return DASH if value is None else str(value)
