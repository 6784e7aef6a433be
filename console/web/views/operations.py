"""An operation's page, and restarting a group (a rollout) from the dashboard."""

from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from console.instances.models import Instance
from console.operations.forms import RolloutForm
from console.operations.models import Operation, Rollout
from console.operations.rollout import request_rollout
from console.web.access import MAY_NOT_OPERATE, OPERATE, role_required


@role_required()
@require_GET
def operation_detail(request, pk: int):
    operation = get_object_or_404(Operation.objects.select_related("instance__host", "requested_by"), pk=pk)
    template = "operations/_progress.html" if request.htmx else "operations/detail.html"
    return render(request, template, {"operation": operation})


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
    return render(request, template, {"rollout": rollout})
