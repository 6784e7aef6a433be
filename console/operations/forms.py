"""What an operator (page or API) may ask for: one operation, or a restart of several instances."""

import base64

from django import forms

from console.instances.models import Instance
from console.operations import trial
from console.operations.models import RELOAD_WEIGHTS_HELP, SKIP_HEALTHY_HELP, Operation, Rollout


class OperationForm(forms.Form):
    kind = forms.ChoiceField(
        choices=Operation.Kind.choices,
        error_messages={"invalid_choice": f"must be one of {', '.join(Operation.Kind.values)}, not %(value)s."},
    )
    reason = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "why (kept in the audit trail)"}),
        error_messages={"max_length": "must be at most 500 characters."},
    )
    recreate = forms.BooleanField(
        required=False, help_text="Docker only: remove the container and create it again from its spec."
    )
    reload_weights = forms.BooleanField(required=False, help_text="Restart only. " + RELOAD_WEIGHTS_HELP)

    def clean(self):
        data = super().clean()
        if data.get("reload_weights") and data.get("kind") not in (None, Operation.Kind.RESTART):
            raise forms.ValidationError("Only a restart can reload the weights.")
        return data

    def options(self) -> dict:
        return {name: True for name in ("recreate", "reload_weights") if self.cleaned_data.get(name)}


class RolloutForm(forms.Form):
    """Restart a group of instances (or named ones), rolling or all at once."""

    group = forms.CharField(max_length=63, required=False)
    instances = forms.CharField(required=False, help_text="Instance names separated by spaces or commas.")
    strategy = forms.ChoiceField(
        choices=Rollout.Strategy.choices,
        initial=Rollout.Strategy.ROLLING,
        error_messages={"invalid_choice": f"must be one of {', '.join(Rollout.Strategy.values)}, not %(value)s."},
    )
    skip_busy = forms.BooleanField(required=False)
    skip_healthy = forms.BooleanField(required=False, help_text=SKIP_HEALTHY_HELP)
    reload_weights = forms.BooleanField(required=False, help_text=RELOAD_WEIGHTS_HELP)
    reason = forms.CharField(
        max_length=500, required=False, error_messages={"max_length": "must be at most 500 characters."}
    )

    def clean(self):
        data = super().clean()
        group, names = data.get("group", ""), data.get("instances", "")
        if bool(group) == bool(names.strip()):
            raise forms.ValidationError("Choose either a group or a list of instances.")
        if group:
            found = list(Instance.objects.filter(group=group, enabled=True).order_by("name"))
            if not found:
                raise forms.ValidationError(f"No enabled instance in group {group!r}.")
        else:
            wanted = [n for n in names.replace(",", " ").split() if n]
            by_name = {i.name: i for i in Instance.objects.filter(name__in=wanted)}
            unknown = [n for n in wanted if n not in by_name]
            if unknown:
                raise forms.ValidationError(f"Unknown instance(s): {', '.join(unknown)}.")
            found = [by_name[n] for n in dict.fromkeys(wanted)]
        data["targets"] = found
        return data


class TryForm(forms.Form):
    """An operator's try of an instance: a prompt, maybe an image, a cap on the answer."""

    prompt = forms.CharField(max_length=trial.MAX_PROMPT_CHARS, widget=forms.Textarea(attrs={"rows": 3}))
    image = forms.FileField(required=False)
    max_tokens = forms.IntegerField(min_value=1, max_value=trial.MAX_TOKENS, initial=128)

    def clean_image(self) -> str | None:
        """The image as a data: URL, or None."""
        image = self.cleaned_data.get("image")
        if not image:
            return None
        if image.size > trial.MAX_IMAGE_BYTES:
            raise forms.ValidationError(f"The image is larger than {trial.MAX_IMAGE_BYTES // 2**20} MiB.")
        data = image.read()
        kinds = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp", b"GIF8": "image/gif"}
        kind = next((k for magic, k in kinds.items() if data.startswith(magic)), None)
        if kind is None:
            raise forms.ValidationError("Send a PNG, JPEG, WebP or GIF image.")
        return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def form_errors(form: forms.Form) -> str:
    """A form's errors as one sentence (for the API and the command line)."""
    return " ".join(
        str(message) if field == "__all__" else f"'{field}': {message}"
        for field, messages in form.errors.items()
        for message in messages
    )
