from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "console.audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from console.audit import signals  # noqa: F401  (logins, logouts, admin changes)
