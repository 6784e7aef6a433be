"""Error answers shared by every page and the API."""

from django.http import JsonResponse
from django.views.csrf import csrf_failure as page_csrf_failure


def csrf_failure(request, reason: str = ""):
    """A failed CSRF check: JSON for the API (a script reads it), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": f"CSRF check failed for a session-authenticated request ({reason})."}, status=403)
    return page_csrf_failure(request, reason=reason)
