"""Schedule pages: list, create, edit, pause, delete, and the next-runs preview."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from console.audit.record import record
from console.operations.effect import rollout_effects
from console.schedules import cron
from console.schedules.forms import ScheduleForm, next_runs
from console.schedules.models import RestartSchedule
from console.watchdog.models import Watchdog
from console.web.access import MAY_NOT_OPERATE, OPERATE, role_required

CHANGE = "schedules.change_restartschedule"
MAY_NOT_CHANGE = "Your role may look at schedules but not change them."


@role_required("schedules.view_restartschedule")
def schedule_list(request):
    schedules = RestartSchedule.objects.prefetch_related("instances").order_by("name")
    rows = []
    for schedule in schedules:
        upcoming = next_runs(schedule.cron, schedule.timezone, 1) if schedule.enabled else []
        last = schedule.runs.select_related("rollout").first()
        effects = rollout_effects(last.rollout) if last is not None and last.rollout is not None else {}
        rows.append((schedule, upcoming[0] if upcoming else None, last, effects))
    return render(request, "schedules/list.html", {"rows": rows, "can_change": request.user.has_perm(CHANGE)})


def _save(request, form: ScheduleForm) -> RestartSchedule:
    schedule = form.save(commit=False)
    if schedule.created_by_id is None:
        schedule.created_by = request.user
    created = schedule.pk is None
    schedule.save()
    form.save_m2m()
    record(
        "schedule.created" if created else "schedule.changed",
        request=request,
        target=f"schedule {schedule.name}",
        outcome=f"{schedule.cron} {schedule.timezone}, {schedule.strategy}, "
        + ("enabled" if schedule.enabled else "paused"),
    )
    return schedule


@role_required("schedules.add_restartschedule", MAY_NOT_CHANGE)
def schedule_create(request):
    form = ScheduleForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        schedule = _save(request, form)
        messages.success(request, f"Schedule {schedule.name!r} saved.")
        return redirect("schedules:list")
    status = 400 if request.method == "POST" else 200
    return render(request, "schedules/form.html", {"form": form, "preview": form.preview()}, status=status)


@role_required(CHANGE, MAY_NOT_CHANGE)
def schedule_edit(request, pk: int):
    schedule = get_object_or_404(RestartSchedule, pk=pk)
    form = ScheduleForm(request.POST or None, instance=schedule)
    if request.method == "POST" and form.is_valid():
        _save(request, form)
        messages.success(request, f"Schedule {schedule.name!r} saved.")
        return redirect("schedules:list")
    status = 400 if request.method == "POST" else 200
    preview = form.preview() if request.method == "POST" else next_runs(schedule.cron, schedule.timezone)
    context = {"form": form, "schedule": schedule, "preview": preview, "runs": schedule.runs.all()[:20]}
    return render(request, "schedules/form.html", context, status=status)


@role_required(CHANGE, MAY_NOT_CHANGE)
@require_POST
def schedule_toggle(request, pk: int):
    schedule = get_object_or_404(RestartSchedule, pk=pk)
    schedule.enabled = not schedule.enabled
    schedule.save(update_fields=["enabled", "updated"])
    state = "resumed" if schedule.enabled else "paused"
    record(f"schedule.{state}", request=request, target=f"schedule {schedule.name}", outcome=state)
    messages.success(request, f"Schedule {schedule.name!r} {state}.")
    return redirect("schedules:list")


@role_required("schedules.delete_restartschedule", MAY_NOT_CHANGE)
@require_POST
def schedule_delete(request, pk: int):
    schedule = get_object_or_404(RestartSchedule, pk=pk)
    schedule.delete()
    record("schedule.deleted", request=request, target=f"schedule {schedule.name}", outcome="deleted")
    messages.success(request, f"Schedule {schedule.name!r} deleted.")
    return redirect("schedules:list")


@role_required("schedules.view_restartschedule")
@require_GET
def schedule_preview(request):
    """The next runs of an expression in a zone, or what is wrong with them (htmx, as the form is typed)."""
    try:
        runs = next_runs(request.GET.get("cron", ""), request.GET.get("timezone", "UTC"))
    except cron.CronError as exc:
        return render(request, "schedules/_preview.html", {"error": str(exc)}, status=400)
    return render(request, "schedules/_preview.html", {"preview": runs})


@role_required(OPERATE, MAY_NOT_OPERATE)
@require_POST
def watchdog_clear(request, name: str):
    """An operator has looked at the instance: the watchdog may act on it again."""
    dog = get_object_or_404(Watchdog, instance__name=name)
    dog.clear()
    record("watchdog.cleared", request=request, target=f"instance {name}", outcome="the watchdog acts again")
    messages.success(request, f"The watchdog of {name} acts again.")
    return redirect(dog.instance)
