"""The Tokens page: a user issues and revokes their own API tokens."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.api.models import ApiToken
from console.audit.record import record


@login_required
def tokens(request):
    new_key = None
    error = ""
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name or len(name) > 100:
            error = "Give the token a name of at most 100 characters."
        else:
            token, new_key = ApiToken.issue(request.user, name)
            record("token.created", request=request, target=f"token {name}", outcome=f"starts with {token.prefix}")
    return render(
        request,
        "api/tokens.html",
        {"tokens": request.user.api_tokens.all(), "new_key": new_key, "error": error},
        status=400 if error else 200,
    )


@login_required
@require_POST
def revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token.delete()
    record("token.revoked", request=request, target=f"token {token.name}", outcome="revoked")
    return redirect("api-tokens")
