from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class WebConfig(AppConfig):
    name = "console.web"
    verbose_name = "Pages"

    def ready(self) -> None:
        from console.web import checks  # noqa: F401  (registers the settings checks)


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin, with the console's site as its default (console.web.admin_site)."""

    default = False  # named in INSTALLED_APPS; WebConfig stays this module's own
    default_site = "console.web.admin_site.ConsoleAdminSite"
