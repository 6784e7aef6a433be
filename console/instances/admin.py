import json
import math

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models

from console.admin_readonly import ReadOnlyAdmin
from console.instances.engines import launch_warnings
from console.instances.models import Hold, Host, Instance


class _StrictJSON(json.JSONDecoder):
    """JSON as the standard says: NaN, Infinity and numbers past a float's range are not (Python's
    parser takes them, and neither PostgreSQL's jsonb nor SQLite's JSON_VALID would store them)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, parse_constant=_not_json, parse_float=_finite, **kwargs)


def _not_json(text: str):
    raise json.JSONDecodeError(f"{text} is not JSON", text, 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _not_json(text)
    return value


class JSONText(forms.JSONField):
    """Django's JSON form field, standard JSON only (_StrictJSON), and with JSON nested past the
    parser's recursion limit a form error: Django lets that RecursionError through (a 500), from the
    field or from its hidden initial."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "decoder": _StrictJSON})

    def to_python(self, value):
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError("This JSON is nested too deeply.", code="invalid") from None

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return forms.fields.InvalidJSONInput(data)


JSON_AS_TEXT = {models.JSONField: {"form_class": JSONText}}


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    formfield_overrides = JSON_AS_TEXT
    list_display = ["name", "queue", "docker_url", "instance_count", "seen_at", "created"]
    search_fields = ["name", "notes"]
    readonly_fields = ["seen_at", "nvml"]

    @admin.display(description="instances")
    def instance_count(self, host: Host) -> int:
        return host.instances.count()


class InstanceForm(forms.ModelForm):
    """The server's admin token is write-only: never sent back to a browser (a page's source, a
    password manager, a screen shared), kept when left blank, removed only by asking."""

    admin_token = forms.CharField(
        required=False,
        max_length=Instance._meta.get_field("admin_token").max_length,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Bearer token for the server's /admin endpoints (drain, soft reset). Write-only: leave "
        "blank to keep the one set.",
    )
    clear_admin_token = forms.BooleanField(required=False, label="Remove the admin token")

    class Meta:
        model = Instance
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.admin_token:
            self.fields["admin_token"].widget.attrs["placeholder"] = "set (not shown)"

    def clean(self):
        data = super().clean()
        if data.get("clear_admin_token"):
            data["admin_token"] = ""
        elif not data.get("admin_token"):
            data["admin_token"] = self.instance.admin_token
        return data


def _names_only(env) -> str:
    return ", ".join(f"{name}=…" for name in env) if isinstance(env, dict) and env else "–"


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    form = InstanceForm
    formfield_overrides = JSON_AS_TEXT
    list_display = ["name", "display_name", "host", "runtime", "engine", "group", "base_url", "enabled"]
    list_filter = ["host", "runtime", "engine", "group", "enabled"]
    search_fields = ["name", "display_name", "container_name", "image", "group"]
    list_select_related = ["host"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "display_name",
                    "host",
                    "runtime",
                    "engine",
                    "group",
                    "enabled",
                    "base_url",
                    "admin_token",
                    "clear_admin_token",
                    "gpu_indices",
                ]
            },
        ),
        ("Docker", {"fields": ["container_name", "image", "run_spec"]}),
        ("Process", {"fields": ["command", "working_dir", "env"]}),
        (
            "Restarts (timeouts in seconds)",
            {"fields": ["handover", "restart_in_place", "drain_timeout", "stop_timeout", "ready_timeout"]},
        ),
    ]

    # One who may only look sees whether a token is set, never the token, and the names of the
    # environment's variables (where secrets go: HF_TOKEN, API keys), never their values.
    SEEN_INSTEAD = {"admin_token": "admin_token_set", "env": "env_names", "run_spec": "run_spec_shown"}

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if self.has_change_permission(request, obj):
            return fieldsets
        return [
            (
                title,
                {
                    **options,
                    "fields": [self.SEEN_INSTEAD.get(f, f) for f in options["fields"] if f != "clear_admin_token"],
                },
            )
            for title, options in fieldsets
        ]

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), *self.SEEN_INSTEAD.values()]

    @admin.display(description="admin token")
    def admin_token_set(self, instance: Instance) -> str:
        return "set (not shown)" if instance.admin_token else "none"

    @admin.display(description="env")
    def env_names(self, instance: Instance) -> str:
        return _names_only(instance.env)

    @admin.display(description="run spec")
    def run_spec_shown(self, instance: Instance) -> str:
        spec = dict(instance.run_spec or {})
        if isinstance(spec.get("environment"), dict):
            spec["environment"] = {name: "…" for name in spec["environment"]}
        return json.dumps(spec, ensure_ascii=False)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        for warning in launch_warnings(obj):
            messages.warning(request, f"{obj.name}: {warning}")


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Seen here; placed and ended on an instance's page, the API or the shell, which audit them."""

    list_display = ["instance", "until", "placed_by", "reason", "placed"]
    search_fields = ["instance__name", "placed_by", "reason"]
