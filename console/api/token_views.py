"""The Tokens page: a user issues and revokes their own API tokens."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.api.models import ApiToken


@login_required
def tokens(request):
    new_key = None
    error = ""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name or len(name) > 100:
            error = "Give the token a name of at most 100 characters."
        else:
            _, new_key = ApiToken.issue(request.user, name)
    return render(
        request,
        "api/tokens.html",
        {"tokens": request.user.api_tokens.all(), "new_key": new_key, "error": error},
        status=400 if error else 200,
    )


@login_required
@require_POST
def revoke(request, pk: int):
    get_object_or_404(ApiToken, pk=pk, user=request.user).delete()
    return redirect("api-tokens")
