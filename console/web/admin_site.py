"""The admin site: Django's, signing in through the console's throttle and refusing forged
selections. The default site (console.web.apps.ConsoleAdminConfig), so every app's registrations,
beat's and auth's included, are on it."""

from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest

from console.accounts.throttle import AdminLoginForm


class ConsoleAdminSite(admin.AdminSite):
    login_form = AdminLoginForm

    def admin_view(self, view, cacheable=False):
        model_admin = getattr(view, "__self__", None)
        if isinstance(model_admin, admin.ModelAdmin) and view.__name__ == "changelist_view":  # actions post there
            view = _selection_checked(view, model_admin.model)
        return super().admin_view(view, cacheable)


def _selection_checked(view, model):
    """The view, answering 400 to a POST whose selected rows (an action's checkboxes) are not keys of
    `model`: Django's admin filters pk__in=the posted values, and one that is not a key (a forged
    form) raised ValueError there, a 500."""

    def checked(request, *args, **kwargs):
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME) if request.method == "POST" else []:
            try:
                model._meta.pk.to_python(value)
            except ValidationError:
                said = f"{value[:40]!r} is not the key of any {model._meta.verbose_name}; nothing was done."
                return HttpResponseBadRequest(said, content_type="text/plain; charset=utf-8")  # the value is forged
        return view(request, *args, **kwargs)

    return checked
