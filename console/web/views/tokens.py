"""The Tokens page: a user issues and revokes their own API tokens."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from console.api.models import DEFAULT_LIFETIME, LIFETIMES, ApiToken
from console.audit.record import record


@login_required
def tokens(request):
    new_key = None
    error = ""
    lifetime = DEFAULT_LIFETIME
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        lifetime = request.POST.get("lifetime", DEFAULT_LIFETIME)
        if not name or len(name) > 100:
            error = "Give the token a name of at most 100 characters."
        elif lifetime not in LIFETIMES:
            error = f"Choose a lifetime of {', '.join(LIFETIMES)} days."
            lifetime = DEFAULT_LIFETIME
        else:
            token, new_key = ApiToken.issue(request.user, name, days=LIFETIMES[lifetime])
            until = f"expires {token.expires.isoformat(timespec='minutes')}" if token.expires else "never expires"
            record(
                "token.created", request=request, target=f"token {name}", outcome=f"starts with {token.prefix}, {until}"
            )
    return render(
        request,
        "api/tokens.html",
        {
            "tokens": request.user.api_tokens.all(),
            "new_key": new_key,
            "error": error,
            "lifetimes": [(value, _("%d days") % days if days else _("never")) for value, days in LIFETIMES.items()],
            "lifetime": lifetime,
        },
        status=400 if error else 200,
    )


@login_required
@require_POST
def revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token.delete()
    record("token.revoked", request=request, target=f"token {token.name}", outcome="revoked")
    return redirect("api-tokens")
