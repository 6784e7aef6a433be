"""Who may see and do what on the pages: sign-in, then the role's permission, checked on the server.

A refusal is an expected event: a 403 with a sentence for the operator (and Django's one log line),
never an exception with its traceback in the console's log.
"""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

VIEW = "instances.view_instance"
OPERATE = "instances.operate_instance"
MAY_NOT_OPERATE = "You may look at instances but not operate them."
MAY_NOT_VIEW = "Your account has no role that may see instances; ask an admin for one."


def refuse(request, message: str):
    template = "_refused.html" if request.htmx else "refused.html"
    return render(request, template, {"message": message}, status=403)


def role_required(permission: str = VIEW, refusal: str = MAY_NOT_VIEW):
    """The view for signed-in users whose role has `permission` (and so may see instances)."""

    def decorate(view):
        @login_required
        @wraps(view)
        def checked(request, *args, **kwargs):
            if not request.user.has_perm(VIEW):
                return refuse(request, MAY_NOT_VIEW)
            if not request.user.has_perm(permission):
                return refuse(request, refusal)
            return view(request, *args, **kwargs)

        return checked

    return decorate
