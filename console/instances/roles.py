"""Roles as Django groups: viewer sees, operator operates, admin manages."""

from django.contrib.auth.models import Group, Permission

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"

ROLE_PERMISSIONS = {
    VIEWER: [
        "instances.view_instance",
        "instances.view_host",
        "instances.view_hold",
        "operations.view_operation",
        "operations.view_rollout",
        "schedules.view_restartschedule",
        "schedules.view_schedulerun",
        "watchdog.view_watchdog",
    ],
    OPERATOR: [
        "instances.view_instance",
        "instances.view_host",
        "instances.view_hold",
        "operations.view_operation",
        "instances.operate_instance",
        "operations.view_rollout",
        "schedules.view_restartschedule",
        "schedules.add_restartschedule",
        "schedules.change_restartschedule",
        "schedules.delete_restartschedule",
        "schedules.view_schedulerun",
        "watchdog.view_watchdog",
        "watchdog.change_watchdog",
        # Beat's entries are seen only: console.schedules.admin says why.
        "django_celery_beat.view_periodictask",
    ],
    ADMIN: [
        "instances.view_instance",
        "instances.add_instance",
        "instances.change_instance",
        "instances.delete_instance",
        "instances.view_host",
        "instances.view_hold",
        "instances.add_host",
        "instances.change_host",
        "instances.delete_host",
        "instances.operate_instance",
        "operations.view_operation",
        "operations.view_rollout",
        "schedules.view_restartschedule",
        "schedules.add_restartschedule",
        "schedules.change_restartschedule",
        "schedules.delete_restartschedule",
        "schedules.view_schedulerun",
        "watchdog.view_watchdog",
        "watchdog.add_watchdog",
        "watchdog.change_watchdog",
        "alerts.view_alertchannel",
        "alerts.add_alertchannel",
        "alerts.change_alertchannel",
        "alerts.delete_alertchannel",
        "alerts.view_alertdelivery",
        "auth.view_user",
        "auth.add_user",
        "auth.change_user",
    ],
}


def ensure_roles() -> None:
    """Create the role groups with their permissions (idempotent)."""
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = []
        for name in names:
            app_label, codename = name.split(".")
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is not None:
                perms.append(perm)
        group.permissions.set(perms)
