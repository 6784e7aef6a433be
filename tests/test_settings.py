"""Settings from the environment: mistakes stop the start with a sentence; importing writes nothing."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def settings_in(env: dict, tmp_path) -> subprocess.CompletedProcess:
    """Import the settings in a fresh process with this environment (var/ pointed at tmp_path)."""
    base = {"PATH": os.environ["PATH"], "CONSOLE_VAR_DIR": str(tmp_path / "var")}
    return subprocess.run(
        [sys.executable, "-c", "import console.settings as s; print(s.DEBUG, s.SECRET_KEY_EPHEMERAL)"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
    )


def test_a_mistyped_boolean_is_an_error_at_start(tmp_path):
    result = settings_in({"DEBUG": "ture"}, tmp_path)
    assert result.returncode != 0
    assert "DEBUG must be true or false" in result.stderr and "'ture'" in result.stderr
    assert settings_in({"DEBUG": "Yes"}, tmp_path).stdout.split()[0] == "True"


def test_a_mistyped_number_is_an_error_at_start(tmp_path):
    result = settings_in({"TELEMETRY_SAMPLE_SECONDS": "5s"}, tmp_path)
    assert result.returncode != 0 and "TELEMETRY_SAMPLE_SECONDS must be a whole number" in result.stderr


def test_importing_the_settings_writes_nothing(tmp_path):
    result = settings_in({}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]  # no key kept yet: one for this process only
    assert not (tmp_path / "var").exists()


def test_manage_py_keeps_a_secret_once(tmp_path):
    env = {"PATH": os.environ["PATH"], "CONSOLE_VAR_DIR": str(tmp_path / "var")}
    for _ in range(2):
        subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, check=True, capture_output=True)
    secret = tmp_path / "var" / "secret_key"
    assert len(secret.read_text()) > 40 and secret.stat().st_mode & 0o777 == 0o600
    assert settings_in({}, tmp_path).stdout.split() == ["False", "False"]


def test_every_task_beat_sends_is_one_a_worker_knows():
    """A mistyped or renamed task in CELERY_BEAT_SCHEDULE is sent every round and never run."""
    from django.conf import settings

    from console.celery import app

    app.loader.import_default_modules()
    names = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"console.operations.tasks.settle_effects", "console.schedules.tasks.send_reports"} <= names
    assert names <= set(app.tasks), sorted(names - set(app.tasks))
