"""JSON, never pickle, for everything the console keeps in Redis.

Django's Redis cache pickles values: anyone who can write to Redis could then run code in the
console. Here a value that is not JSON (planted, or written by another program) is a cache miss.
"""

import json
import logging

log = logging.getLogger(__name__)


class JSONSerializer:
    """For django.core.cache.backends.redis.RedisCache (OPTIONS serializer)."""

    def dumps(self, obj):
        if type(obj) is int:  # kept as Redis integers, so that incr() stays atomic
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data):
        try:
            return int(data)
        except ValueError:
            pass
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            log.warning("ignored a cache value that is not JSON (%d bytes)", len(data))
            return None
