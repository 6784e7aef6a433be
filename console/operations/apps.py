from django.apps import AppConfig


class OperationsConfig(AppConfig):
    name = "console.operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Binds shared tasks to the console's Celery app in every Django process
        # (kept out of console/__init__ so plain modules import without Celery).
        import console.celery  # noqa: F401
