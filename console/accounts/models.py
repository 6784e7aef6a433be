from django.conf import settings
from django.db import models


class Preference(models.Model):
    """A user's own settings, followed on every device they log in from."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference")
    language = models.CharField(
        max_length=16, blank=True, choices=settings.LANGUAGES, help_text="Empty: the browser's."
    )

    def __str__(self) -> str:
        return f"preferences of {self.user}"
