from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _create_roles(sender, **kwargs) -> None:
    from console.instances.roles import ensure_roles

    ensure_roles()


class InstancesConfig(AppConfig):
    name = "console.instances"
    verbose_name = "Instances"

    def ready(self) -> None:
        from console.instances import lookups  # noqa: F401  (registers integer `in` without overflow)

        # After every migrate, so a production database has its roles too.
        post_migrate.connect(_create_roles, sender=self)
