from django import forms

from console.operations.models import Operation


class OperationForm(forms.Form):
    kind = forms.ChoiceField(choices=Operation.Kind.choices)
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.TextInput(attrs={"placeholder": "why (kept in the audit trail)"})
    )
    recreate = forms.BooleanField(
        required=False, help_text="Docker only: remove the container and create it again from its spec."
    )
