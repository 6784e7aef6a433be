"""Instance pages: the list and one instance with its operations."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.instances.models import Instance
from console.operations.forms import OperationForm
from console.operations.models import Operation, Rollout
from console.operations.request import OperationRefused, request_operation
from console.schedules.models import Watchdog
from console.telemetry.follow import recent_lines
from console.telemetry.latest import latest_samples
from console.telemetry.series import RANGES

OPERATE = "instances.operate_instance"


@login_required
def instance_list(request):
    """The dashboard: every instance with its badge and figures, filtered by host or group."""
    everything = Instance.objects.select_related("host").order_by("group", "name")
    host, group = request.GET.get("host", ""), request.GET.get("group", "")
    instances = list(everything.filter(**{k: v for k, v in (("host__name", host), ("group", group)) if v}))
    last_ops = {}
    for operation in Operation.objects.filter(instance__in=instances).order_by("-created")[:500]:
        last_ops.setdefault(operation.instance_id, operation)
    samples = latest_samples(instances)
    attention = set(
        Watchdog.objects.filter(instance__in=instances)
        .exclude(needs_attention_since=None)
        .values_list("instance_id", flat=True)
    )
    rows = [
        (instance, last_ops.get(instance.pk), samples.get(instance.pk), instance.pk in attention)
        for instance in instances
    ]
    return render(
        request,
        "instances/list.html",
        {
            "rows": rows,
            "hosts": sorted({i.host.name for i in everything}),
            "groups": sorted({i.group for i in everything if i.group}),
            "host": host,
            "group": group,
            "can_operate": request.user.has_perm(OPERATE),
            "rollouts": Rollout.objects.exclude(state__in=[Rollout.State.SUCCEEDED, Rollout.State.FAILED])[:5],
        },
    )


@login_required
def instance_detail(request, name: str):
    instance = get_object_or_404(Instance.objects.select_related("host"), name=name)
    operations = instance.operations.select_related("requested_by")[:20]
    active = instance.operations.filter(state__in=Operation.ACTIVE_STATES).first()
    return render(
        request,
        "instances/detail.html",
        {
            "instance": instance,
            "operations": operations,
            "active": active,
            "sample": latest_samples([instance]).get(instance.pk),
            "log_lines": recent_lines(instance.name),
            "ranges": list(RANGES),
            "watchdog": Watchdog.objects.filter(instance=instance).first(),
            "form": OperationForm(),
            "can_operate": request.user.has_perm(OPERATE),
        },
    )


@login_required
@require_POST
def operate(request, name: str):
    instance = get_object_or_404(Instance, name=name)
    if not request.user.has_perm(OPERATE):
        raise PermissionDenied("You may look at instances but not operate them.")
    form = OperationForm(request.POST)
    if not form.is_valid():
        return render(request, "operations/_form.html", {"instance": instance, "form": form}, status=400)
    try:
        operation, created = request_operation(
            instance,
            form.cleaned_data["kind"],
            user=request.user,
            reason=form.cleaned_data["reason"],
            options={"recreate": True} if form.cleaned_data["recreate"] else {},
            request=request,
        )
    except OperationRefused as exc:
        if request.htmx:
            # Shown beside the form; the progress of the running operation stays in view.
            response = render(request, "operations/_refused.html", {"message": str(exc)}, status=409)
            response["HX-Retarget"] = "#operate-message"
            response["HX-Reswap"] = "innerHTML"
            return response
        messages.error(request, str(exc))
        return redirect(instance)
    if request.htmx:
        return render(request, "operations/_progress.html", {"operation": operation, "joined": not created})
    return redirect(instance)
