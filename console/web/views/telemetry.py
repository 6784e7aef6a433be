"""An instance's chart series, its Diagnose panel and its log download."""

import re

from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from console.host.logs import recent_lines
from console.instances.models import Instance
from console.telemetry.diagnose import diagnose
from console.telemetry.series import RANGES, series
from console.web.access import role_required


@role_required()
@require_GET
def instance_series(request, name: str):
    instance = get_object_or_404(Instance, name=name)
    range_name = request.GET.get("range", "15m")
    if range_name not in RANGES:
        return JsonResponse({"error": f"Unknown range {range_name!r}; use one of {', '.join(RANGES)}."}, status=400)
    return JsonResponse(series(instance, range_name))


@role_required()
@require_GET
def instance_diagnose(request, name: str):
    instance = get_object_or_404(Instance, name=name)
    return render(request, "telemetry/_diagnose.html", {"instance": instance, "diagnosis": diagnose(instance)})


LEVELS = ("debug", "info", "warning", "error", "critical")


@role_required()
@require_GET
def log_download(request, name: str):
    """The recent log lines as text, optionally filtered by a substring and a minimum level."""
    instance = get_object_or_404(Instance, name=name)
    minimum = request.GET.get("level", "debug")
    if minimum not in LEVELS:
        return HttpResponseBadRequest(f"Unknown level {minimum!r}; use one of {', '.join(LEVELS)}.")
    needle = request.GET.get("contains", "")
    if len(needle) > 200:
        return HttpResponseBadRequest("The filter is limited to 200 characters.")
    floor = LEVELS.index(minimum)
    lines = [
        entry["text"]
        for entry in recent_lines(instance.name)
        if LEVELS.index(entry.get("level", "info")) >= floor and needle in entry["text"]
    ]
    response = HttpResponse("\n".join(lines) + ("\n" if lines else ""), content_type="text/plain; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    filename = re.sub(r"[^a-z0-9-]", "", instance.name) or "instance"
    response["Content-Disposition"] = f'attachment; filename="{filename}-{stamp}.log"'
    return response
