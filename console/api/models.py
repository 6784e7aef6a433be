"""Per-user API tokens. Only a hash is stored; the key is shown once, when created."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

# What the Tokens page offers, in days (None: never expires); a script's key should not live for ever
# by default, while a Prometheus scraper may need one that does.
LIFETIMES = {"30": 30, "90": 90, "365": 365, "never": None}
DEFAULT_LIFETIME = "90"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=8, editable=False, help_text="First characters, to tell tokens apart.")
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True, help_text="Refused from this moment on; empty: never.")

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()

    @classmethod
    def issue(cls, user, name: str, days: int | None = None) -> tuple["ApiToken", str]:
        """Create a token valid for `days` (None: until revoked); returns it with its key, which is not
        stored anywhere."""
        key = "ic_" + secrets.token_urlsafe(32)
        expires = timezone.now() + timedelta(days=days) if days is not None else None
        token = cls.objects.create(user=user, name=name, key_hash=hash_key(key), prefix=key[:8], expires=expires)
        return token, key


class KeptDurations(models.Model):
    """What /metrics has counted of the ended operations' durations, up to a mark (console/api/durations.py),
    for the console processes started later: one row, written again when the mark moves."""

    value = models.JSONField(default=dict)
    saved = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "kept operation durations"
        verbose_name_plural = "kept operation durations"
