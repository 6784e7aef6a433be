"""The dashboard and an instance's page, with its operate form, operation card and history."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from console.audit.record import record
from console.host.logs import recent_lines
from console.instances.engines import launch_warnings
from console.instances.holds import active_hold, active_holds
from console.instances.models import Host, Instance
from console.operations import trial
from console.operations.effect import with_latency_effects
from console.operations.forms import OperationForm, TryForm, form_errors
from console.operations.holds import DURATIONS, HoldRefused, end_holds, place_holds
from console.operations.models import Operation, Rollout
from console.operations.request import OperationRefused, request_operation
from console.operations.summaries import last_operations, operation_summary
from console.operations.tasks import try_instance as try_instance_task
from console.telemetry.hosts import host_summaries, host_summary, hosts_with_counts
from console.telemetry.latest import is_fresh, latest_samples, stale_after
from console.telemetry.series import RANGES
from console.watchdog.models import Watchdog
from console.web.access import MAY_NOT_OPERATE, OPERATE, refuse, role_required
from console.web.views.operations import effect_context


def live_state(instances, samples: dict, operations: dict, hosts=(), holds=None) -> dict:
    """What live.js shows before the first event arrives, in the shape of the events themselves;
    with each sample's and host report's age, so that the page turns a badge to "no data" (and a
    host to offline) once nothing new has come for the window in which a sample still counts.
    `holds`: {instance id: hold} where the caller has read them already."""
    now = timezone.now()
    holds = active_holds(instances, now) if holds is None else holds
    return {
        "holds": {i.name: holds[i.pk].summary() for i in instances if i.pk in holds},
        "samples": {
            i.name: {**samples[i.pk].summary(), "age": (now - samples[i.pk].at).total_seconds(), "host": i.host.name}
            for i in instances
            if i.pk in samples
        },
        "operations": {i.name: operation_summary(operations[i.pk]) for i in instances if i.pk in operations},
        "hosts": {h["name"]: h["seen_age_seconds"] for h in hosts},
        "stale_seconds": stale_after().total_seconds(),
    }


@role_required()
@require_GET
def instance_list(request):
    """The dashboard: every instance with its badge and figures, filtered by host or group."""
    host, group = request.GET.get("host", ""), request.GET.get("group", "")
    chosen = Instance.objects.select_related("host").order_by("group", "name")
    instances = list(chosen.filter(**{k: v for k, v in (("host__name", host), ("group", group)) if v}))
    choices = set(Instance.objects.values_list("host__name", "group"))
    attention = set(
        Watchdog.objects.filter(instance__in=instances)
        .exclude(needs_attention_since=None)
        .values_list("instance_id", flat=True)
    )
    hosts = host_summaries()
    return render(
        request,
        "instances/list.html",
        {
            "rows": [(instance, instance.pk in attention) for instance in instances],
            "live_state": live_state(instances, latest_samples(instances), last_operations(instances), hosts),
            "host_cards": hosts,
            "hosts": sorted({h for h, _g in choices}),
            "groups": sorted({g for _h, g in choices if g}),
            "host": host,
            "group": group,
            "can_operate": request.user.has_perm(OPERATE),
            "rollouts": Rollout.objects.exclude(state__in=[Rollout.State.SUCCEEDED, Rollout.State.FAILED])[:5],
        },
    )


@role_required()
@require_GET
def host_detail(request, name: str):
    """A host: whether its worker reports, its GPUs from the worker's last NVML snapshot with what
    each instance (or a process of none) holds, and its instances."""
    host = get_object_or_404(hosts_with_counts(), name=name)
    instances = list(host.instances.select_related("host").order_by("group", "name"))
    summary = host_summary(host)
    if request.htmx:  # the GPUs' card, every 10 s: the host's report alone
        return render(request, "instances/_host_gpus.html", {"host": summary})
    holds = active_holds(instances)
    return render(
        request,
        "instances/host.html",
        {
            "host": summary,
            "rows": [(instance, False) for instance in instances],
            "live_state": live_state(
                instances, latest_samples(instances), last_operations(instances), [summary], holds=holds
            ),
            "can_operate": request.user.has_perm(OPERATE),
            **host_hold_context(host, instances, holds=holds),
        },
    )


@role_required()
@require_GET
def instance_detail(request, name: str):
    instance = get_object_or_404(Instance.objects.select_related("host"), name=name)
    operations = last_operations([instance])
    hold = active_hold(instance)
    holds = {instance.pk: hold} if hold else {}
    return render(
        request,
        "instances/detail.html",
        {
            "instance": instance,
            "operations": with_latency_effects(instance, instance.operations.select_related("requested_by")[:20]),
            "latest": operations.get(instance.pk),
            "live_state": live_state([instance], latest_samples([instance]), operations, holds=holds),
            "log_lines": recent_lines(instance.name),
            "ranges": list(RANGES),
            "watchdog": Watchdog.objects.filter(instance=instance).first(),
            "form": OperationForm(),
            "try_form": TryForm(),
            "can_operate": request.user.has_perm(OPERATE),
            "launch_warnings": launch_warnings(instance),
            **hold_context(instance, hold=hold),
        },
    )


def _duration(minutes: int) -> str:
    if minutes < 60:
        return ngettext("%d minute", "%d minutes", minutes) % minutes
    return ngettext("%d hour", "%d hours", minutes // 60) % (minutes // 60)


_UNREAD = object()


def hold_context(instance, error: str = "", hold=_UNREAD) -> dict:
    """The hold card's context; `hold` where the caller has read it already (None: not on hold)."""
    return {
        "instance": instance,
        "hold": active_hold(instance) if hold is _UNREAD else hold,
        "durations": [(minutes, _duration(minutes)) for minutes in DURATIONS],
        "hold_error": error,
    }


def _minutes(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 7 else None


def host_hold_context(host, instances, error: str = "", holds=None) -> dict:
    """The host's hold card's context; `holds` ({instance id: hold}) where the caller has read them."""
    return {
        "hold_host": host,
        "held": len(active_holds(instances) if holds is None else holds),
        "instance_count": len(instances),
        "durations": [(minutes, _duration(minutes)) for minutes in DURATIONS],
        "hold_error": error,
    }


def _hold_card(request, instances: list, back: str, card):
    """A hold card (GET); operators hold `instances` or end their holds (POST). `card(error)` gives the
    card's template and context; a plain form's POST returns to `back`."""
    can_operate = request.user.has_perm(OPERATE)
    error = ""
    if request.method == "POST":
        if not can_operate:
            return refuse(request, MAY_NOT_OPERATE)
        who = {"user": request.user, "request": request}
        try:
            if request.POST.get("end"):
                end_holds(instances, **who)
            else:
                minutes, reason = _minutes(request.POST.get("minutes", "")), request.POST.get("reason", "")
                place_holds(instances, minutes=minutes, reason=reason, **who)
        except HoldRefused as exc:
            error = str(exc)
        if not request.htmx:
            if error:
                return render(request, "refused.html", {"message": error}, status=400)
            return redirect(back)
    template, context = card(error)
    return render(request, template, {**context, "can_operate": can_operate}, status=400 if error else 200)


@role_required()
@require_http_methods(["GET", "POST"])
def hold(request, name: str):
    """The instance's hold card (GET); operators put the instance on hold or end its hold (POST)."""
    instance = get_object_or_404(Instance.objects.select_related("host"), name=name)
    return _hold_card(
        request,
        [instance],
        instance.get_absolute_url(),
        lambda error: ("instances/_hold.html", hold_context(instance, error)),
    )


@role_required()
@require_http_methods(["GET", "POST"])
def host_hold(request, name: str):
    """The host's hold card (GET): how many of its instances are on hold; operators hold them all, for
    work on the machine itself, or end their holds (POST)."""
    host = get_object_or_404(Host, name=name)
    instances = list(host.instances.order_by("name"))
    return _hold_card(
        request,
        instances,
        reverse("instances:host", args=[host.name]),
        lambda error: ("instances/_host_hold.html", host_hold_context(host, instances, error)),
    )


@role_required()
@require_GET
def operation_card(request, name: str):
    """The card of the instance's newest operation (htmx, when an operation event arrives); once it has
    ended, with what it changed (fetched again every half minute while that is measured)."""
    instance = get_object_or_404(Instance, name=name)
    latest = instance.operations.select_related("instance", "requested_by").first()
    context = {"latest": latest, **(effect_context(latest) if latest is not None and latest.is_finished else {})}
    return render(request, "instances/_operation.html", context)


@role_required()
@require_GET
def operation_rows(request, name: str):
    """The rows of the instance's operations table (htmx, when an operation event arrives)."""
    instance = get_object_or_404(Instance, name=name)
    operations = with_latency_effects(instance, instance.operations.select_related("requested_by")[:20])
    return render(request, "instances/_operations.html", {"operations": operations})


@role_required(OPERATE, MAY_NOT_OPERATE)
@require_POST
def try_instance(request, name: str):
    """Send one chat request to the instance through its host's worker; the answer streams to this
    operator's page (live.js, trial.update events)."""
    instance = get_object_or_404(Instance.objects.select_related("host"), name=name)
    form = TryForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "instances/_try_result.html", {"error": form_errors(form)}, status=400)
    sample = latest_samples([instance]).get(instance.pk)
    active = instance.operations.filter(state__in=Operation.ACTIVE_STATES).first()
    if active is not None or not is_fresh(sample) or sample.status != "ready":
        why = (
            f"{active} is {active.state}"
            if active
            else f"it is {sample.status if is_fresh(sample) else 'not sampled lately'}"
        )
        return render(
            request, "instances/_try_result.html", {"error": f"{instance.name} is not ready to try: {why}."}, status=409
        )
    trial_id = trial.new_trial_id()
    prompt = form.cleaned_data["prompt"]
    record(
        "instance.try",
        request=request,
        target=f"instance {instance.name}",
        reason=prompt[:200],
        outcome=f"sent as {trial_id}" + (" with an image" if form.cleaned_data["image"] else ""),
    )
    try_instance_task.apply_async(
        args=[
            instance.pk,
            request.user.pk,
            trial_id,
            trial.messages(prompt, form.cleaned_data["image"]),
            form.cleaned_data["max_tokens"],
        ],
        queue=instance.host.queue,
    )
    return render(request, "instances/_try_result.html", {"trial_id": trial_id})


@role_required(OPERATE, MAY_NOT_OPERATE)
@require_POST
def operate(request, name: str):
    instance = get_object_or_404(Instance, name=name)
    form = OperationForm(request.POST)
    if not form.is_valid():
        return render(request, "operations/_form.html", {"instance": instance, "form": form}, status=400)
    try:
        operation, created = request_operation(
            instance,
            form.cleaned_data["kind"],
            user=request.user,
            reason=form.cleaned_data["reason"],
            options=form.options(),
            request=request,
        )
    except OperationRefused as exc:
        if request.htmx:
            # Shown beside the form; the progress of the running operation stays in view.
            response = render(request, "_refused.html", {"message": exc.rendered()}, status=409)
            return reswap(retarget(response, "#operate-message"), "innerHTML")
        messages.error(request, exc.rendered())
        return redirect(instance)
    if request.htmx:
        return render(request, "operations/_progress.html", {"operation": operation, "joined": not created})
    return redirect(instance)
