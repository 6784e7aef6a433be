"""An operation's page, and restarting a group (a rollout) from the dashboard."""

from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from console.instances.models import Instance
from console.operations.effect import effect, rollout_effects
from console.operations.forms import RolloutForm
from console.operations.models import Operation, Rollout
from console.operations.rollout import request_rollout
from console.web.access import MAY_NOT_OPERATE, OPERATE, role_required

# What each figure of an operation's effect is called on its page.
EFFECT_LABELS = {
    "p95_ms": _("p95 latency"),
    "ttft_ms": _("time to first token"),
    "gpu_used": _("GPU memory"),
    "reserved": _("allocator reserved"),
    "fragmentation": _("fragmentation"),
    "rss": _("host memory (RSS)"),
    "fds": _("open files"),
    "close_wait": _("CLOSE_WAIT connections"),
}


@role_required()
@require_GET
def operation_detail(request, pk: int):
    operation = get_object_or_404(Operation.objects.select_related("instance__host", "requested_by"), pk=pk)
    if request.htmx:
        return render(request, "operations/_progress.html", {"operation": operation})
    return render(request, "operations/detail.html", {"operation": operation, **effect_context(operation)})


def effect_context(operation) -> dict:
    measured = effect(operation)
    if measured is not None:
        for row in measured["figures"]:
            row["label"] = EFFECT_LABELS[row["name"]]
    return {"effect": measured}


@role_required()
@require_GET
def operation_effect(request, pk: int):
    """The card of what the operation changed (htmx: once it ends, then every half minute while it is
    measured)."""
    operation = get_object_or_404(Operation.objects.select_related("instance"), pk=pk)
    return render(request, "operations/_effect.html", {"operation": operation, **effect_context(operation)})


@role_required(OPERATE, MAY_NOT_OPERATE)
@require_POST
def rollout_create(request):
    form = RolloutForm(request.POST)
    if not form.is_valid():
        groups = sorted(set(Instance.objects.exclude(group="").values_list("group", flat=True)))
        context = {"rollout_form": form, "groups": groups, "group": request.POST.get("group", "")}
        response = render(request, "operations/_rollout_form.html", context, status=400)
        return reswap(retarget(response, "#rollout-form"), "outerHTML")
    data = form.cleaned_data
    rollout = request_rollout(
        data["targets"],
        strategy=data["strategy"],
        user=request.user,
        reason=data["reason"],
        skip_busy=data["skip_busy"],
        skip_healthy=data["skip_healthy"],
        reload_weights=data["reload_weights"],
        request=request,
    )
    if request.htmx:
        return render(request, "operations/_rollout.html", {"rollout": rollout})
    return redirect("operations:rollout", pk=rollout.pk)


@role_required()
@require_GET
def rollout_detail(request, pk: int):
    rollout = get_object_or_404(Rollout.objects.select_related("requested_by"), pk=pk)
    template = "operations/_rollout.html" if request.htmx else "operations/rollout.html"
    return render(request, template, {"rollout": rollout, **rollout_effects(rollout)})
