from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "console.live"
    verbose_name = "Live updates"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import m2m_changed, post_save

        User = get_user_model()
        # A logout, a deactivation or a change of role reaches the user's open sockets at once.
        user_logged_out.connect(_logged_out, dispatch_uid="live-logout")
        post_save.connect(_user_changed, sender=User, dispatch_uid="live-user-saved")
        m2m_changed.connect(_roles_changed, sender=User.groups.through, dispatch_uid="live-user-groups")
        m2m_changed.connect(_roles_changed, sender=User.user_permissions.through, dispatch_uid="live-user-perms")


def _logged_out(sender, request, user, **kwargs) -> None:
    from console.live.events import recheck_user

    if user is not None:
        recheck_user(user.pk)


def _user_changed(sender, instance, created: bool, **kwargs) -> None:
    from console.live.events import recheck_user

    if not created:
        recheck_user(instance.pk)


def _roles_changed(sender, instance, action: str, reverse: bool, pk_set, **kwargs) -> None:
    from console.live.events import recheck_user

    if action not in ("post_add", "post_remove", "post_clear"):
        return
    users = (pk_set or []) if reverse else [instance.pk]
    for user_id in users:
        recheck_user(user_id)
