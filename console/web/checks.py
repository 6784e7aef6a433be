"""Start-up checks of the settings (`manage.py check`)."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def secret_key_is_kept(app_configs, **kwargs) -> list:
    if getattr(settings, "SECRET_KEY_EPHEMERAL", False):
        return [
            Warning(
                "SECRET_KEY is not set and no key is kept under CONSOLE_VAR_DIR: this process made up its own, "
                "so sign-ins end when it restarts.",
                hint="Set SECRET_KEY, or run any manage.py command once to keep one under CONSOLE_VAR_DIR.",
                id="console.W001",
            )
        ]
    return []
