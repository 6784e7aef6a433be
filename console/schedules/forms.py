from django import forms
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from console.instances.models import Instance
from console.schedules import cron
from console.schedules.models import RestartSchedule


class ScheduleForm(forms.ModelForm):
    group = forms.ChoiceField(required=False, label=_("Group"))

    class Meta:
        model = RestartSchedule
        fields = [
            "name",
            "cron",
            "timezone",
            "instances",
            "group",
            "strategy",
            "busy_policy",
            "skip_healthy",
            "reload_weights",
            "window_start",
            "window_end",
            "grace_minutes",
            "enabled",
        ]
        # The model's labels and its longer help are the admin's (English); the page's, in the reader's
        # language (the model's other help is translated where it is written).
        labels = {
            "name": _("Name"),
            "cron": _("When"),
            "timezone": _("Time zone"),
            "instances": _("Instances"),
            "strategy": _("Strategy"),
            "busy_policy": _("Busy instances"),
            "skip_healthy": _("Only those that need it"),
            "reload_weights": _("Reload weights"),
            "window_start": _("Window start"),
            "window_end": _("Window end"),
            "grace_minutes": _("Grace (minutes)"),
            "enabled": _("Enabled"),
        }
        help_texts = {
            "skip_healthy": _(
                "Leave running an instance whose checklist (Diagnose) finds nothing a restart would cure when "
                "its turn comes. One without recent figures is restarted."
            ),
            "reload_weights": _(
                "Read the weights again from the checkpoint at each restart (a new fine-tune copied over the "
                "old files); a restart in place is then a whole restart."
            ),
        }
        widgets = {
            "instances": forms.CheckboxSelectMultiple,
            "window_start": forms.TimeInput(attrs={"type": "time"}),
            "window_end": forms.TimeInput(attrs={"type": "time"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        groups = sorted(set(Instance.objects.exclude(group="").values_list("group", flat=True)))
        self.fields["group"].choices = [("", "—")] + [(g, g) for g in groups]
        self.fields["instances"].queryset = Instance.objects.order_by("name")
        self.fields["instances"].required = False
        self.fields["cron"].widget.attrs.update(placeholder="daily at 03:00")

    def clean(self):
        data = super().clean()
        if not data.get("instances") and not data.get("group"):
            raise forms.ValidationError(gettext("Choose a group or at least one instance to restart."))
        return data

    def preview(self, count: int = 5) -> list:
        """The next runs, for the page; empty if the form is not valid."""
        return next_runs(self.cleaned_data["cron"], self.cleaned_data["timezone"], count) if self.is_valid() else []


def next_runs(expression: str, zone_name: str, count: int = 5, after=None) -> list[dict]:
    """The next runs, each in the zone (with its abbreviation: on a fall-back day 01:30 EDT and
    01:30 EST are different instants) and in UTC."""
    tz = cron.zone(zone_name)
    runs = []
    for instant in cron.next_runs(cron.parse(expression), tz, after or timezone.now(), count):
        local = instant.astimezone(tz)
        runs.append({"local": local, "utc": instant, "zone": local.tzname(), "twice": cron.happens_twice(local)})
    return runs
