"""What pages hand to static/console/live.js, which renders every live figure and badge (one place)."""

from django import template
from django.utils.html import json_script
from django.utils.translation import gettext_lazy as _

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


@register.simple_tag
def status_labels_json():
    """The badge labels in the page's language."""
    return json_script({k: str(v) for k, v in STATUS_LABELS.items()}, "status-labels")
