from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from console.operations.models import Operation


@login_required
def operation_detail(request, pk: int):
    operation = get_object_or_404(Operation.objects.select_related("instance", "requested_by"), pk=pk)
    template = "operations/_progress.html" if request.htmx else "operations/detail.html"
    return render(request, template, {"operation": operation})
