"""What someone who can write to Redis can plant is data, never code: the cache and Celery speak JSON."""

import pickle

from django.test import Client

from console.host.logs import recent_lines, tail_key
from tests.factories import process_instance, user


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # what a planted pickle would run on load
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_never_loaded(redis_cache, tmp_path, db):
    marker = tmp_path / "pwned"
    client = redis_cache._cache.get_client(write=True)
    client.set(redis_cache.make_key(tail_key("victim")), pickle.dumps(Payload(str(marker))))
    client.set(redis_cache.make_key("login-fail-account:admin"), pickle.dumps(Payload(str(marker))))
    assert recent_lines("victim") == []  # a miss, not a crash
    process_instance("victim", command=["true"])
    viewer = Client()
    viewer.force_login(user("reader", "viewer"))
    assert viewer.get("/instances/victim/").status_code == 200
    assert Client().post("/accounts/login/", {"username": "admin", "password": "x"}).status_code == 200
    assert not marker.exists()


def test_the_cache_round_trips_what_the_console_keeps(redis_cache):
    lines = [{"text": "INFO ready", "level": "info"}]
    redis_cache.set(tail_key("kept"), lines)
    assert recent_lines("kept") == lines
    redis_cache.set("counter", 0)
    assert redis_cache.incr("counter") == 1 and redis_cache.get("counter") == 1
    redis_cache.set(tail_key("odd"), {"not": "a list"})
    assert recent_lines("odd") == []


def test_celery_accepts_json_only():
    from console.celery import app

    assert app.conf.accept_content == ["json"] and app.conf.task_serializer == "json"
