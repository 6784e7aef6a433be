"""The audit trail page, filterable, and the same selection as CSV."""

import csv
from datetime import datetime, time

from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from console.audit.models import AuditEntry
from console.web.access import role_required

COLUMNS = ["at", "actor", "address", "action", "target", "reason", "outcome"]


class _Echo:
    def write(self, value):
        return value


def _selection(request):
    entries = AuditEntry.objects.all()
    params = request.GET
    if params.get("actor"):
        entries = entries.filter(actor=params["actor"])
    if params.get("action"):
        entries = entries.filter(action__startswith=params["action"])
    if params.get("target"):
        entries = entries.filter(target__icontains=params["target"][:100])
    for name, lookup, at in (("since", "at__gte", time.min), ("until", "at__lte", time.max)):
        if params.get(name):
            try:
                day = datetime.strptime(params[name], "%Y-%m-%d").date()
            except ValueError:
                raise ValueError(f"{name!r} must be a date like 2026-11-24.") from None
            entries = entries.filter(**{lookup: timezone.make_aware(datetime.combine(day, at))})
    return entries


@role_required()
def audit_list(request):
    try:
        entries = _selection(request)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    page = Paginator(entries, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    actions = sorted({a.split(".")[0] for a in AuditEntry.objects.values_list("action", flat=True).distinct()})
    return render(request, "audit/list.html", {"page": page, "query": query.urlencode(), "actions": actions})


@role_required()
def audit_csv(request):
    try:
        entries = _selection(request)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(COLUMNS)
        for entry in entries.iterator(chunk_size=2000):
            values = [
                entry.at.isoformat(),
                entry.actor,
                entry.address or "",
                entry.action,
                entry.target,
                entry.reason,
                entry.outcome,
            ]
            # A cell starting with = + - @ is a formula to a spreadsheet: keep it text.
            yield writer.writerow(["'" + v if v[:1] in ("=", "+", "-", "@") else v for v in values])

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response
